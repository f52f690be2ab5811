//! `schema.graphql` is generated from the code: regenerate it with
//! `cargo run -p api --bin dcs-api -- schema > schema.graphql`.

#[test]
fn committed_schema_matches_the_code() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../schema.graphql");
    let committed = std::fs::read_to_string(&path).expect("schema.graphql at the repository root");
    let generated = api::graphql::sdl();
    assert!(
        committed == generated,
        "schema.graphql is stale: run `cargo run -p api --bin dcs-api -- schema > schema.graphql`"
    );
}
