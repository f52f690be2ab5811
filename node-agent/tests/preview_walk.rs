//! Previews and the secret scan on plain directories standing in for an
//! overlay upper directory, without containerd: the preview finds what the
//! commit's walk finds, tricks find nothing and never read the host, and an
//! abandoned preview stops. (The same against real containers is in the
//! end-to-end suite: `tests/tests/look_before_push.rs`, `hostile_fs.rs`.)

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use dcs_protocol::{Finding, Preview};
use node_agent::layer::Excludes;
use node_agent::layer::archive::TarWriter;
use node_agent::layer::overlay::{OverlayUpper, write_changes};
use node_agent::preview::survey_upper;
use node_agent::scan::Scanner;
use rustix::fs::{FileType, Mode, OFlags, RenameFlags};

const TOKEN: &str = "ghp_0123456789abcdefghijABCDEFGHIJ012345";

fn upper(path: &Path) -> OverlayUpper {
    OverlayUpper::from_mount(
        "overlay",
        &[format!("upperdir={}", path.display()), "userxattr".into()],
    )
    .expect("overlay mount")
}

fn preview(dir: &Path, excludes: &Excludes) -> Preview {
    survey_upper(&upper(dir), excludes, &AtomicBool::new(false)).expect("preview")
}

/// The findings of the commit's walk (a tar that is thrown away).
fn commit_findings(dir: &Path, excludes: &Excludes) -> Vec<Finding> {
    let mut scanner = Scanner::new();
    let mut tar = TarWriter::new(std::io::sink());
    write_changes(&upper(dir), excludes, &mut scanner, &mut tar).expect("walk");
    scanner.finish().into_report().findings
}

fn write(path: &Path, data: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap();
}

#[test]
fn a_preview_finds_what_the_commit_finds() {
    let root = tempfile::tempdir().unwrap();
    let up = root.path();
    write(&up.join("root/.aws/credentials"), b"[default]\n");
    write(&up.join("root/.ssh/id_ed25519"), b"key");
    write(&up.join("srv/app/.env"), b"A=1\nAPI_TOKEN=abcdef123456\n");
    write(
        &up.join("srv/app/config.js"),
        format!("x\ny\nconst t = '{TOKEN}'\n").as_bytes(),
    );
    // A further name of the file with the token: found by its name (the
    // token was found under the first name, which the walk meets first).
    std::fs::create_dir_all(up.join("srv/z")).unwrap();
    std::fs::hard_link(up.join("srv/app/config.js"), up.join("srv/z/.netrc")).unwrap();
    write(&up.join("var/log/big.log"), &[]);
    std::fs::File::options()
        .write(true)
        .open(up.join("var/log/big.log"))
        .unwrap()
        .set_len(60 << 20)
        .unwrap();
    write(&up.join("tmp/.env"), b"TOKEN=excluded-by-default\n");
    let excludes = Excludes::new(&["/srv/app/.env".into(), "/nothing/*".into()], true).unwrap();

    let preview = preview(up, &excludes);
    let commit = commit_findings(up, &excludes);
    assert_eq!(preview.findings.findings, commit);
    let found: Vec<_> = commit
        .iter()
        .map(|f| (f.path.as_str(), f.rule.as_str(), f.line, f.size))
        .collect();
    assert_eq!(
        found,
        [
            ("/root/.aws/credentials", "aws-credentials-file", None, None),
            ("/root/.ssh/id_ed25519", "ssh-private-key-file", None, None),
            ("/srv/app/config.js", "github-token", Some(3), None),
            ("/srv/z/.netrc", "netrc-file", None, None),
            ("/var/log/big.log", "huge-log", None, Some(60 << 20)),
        ]
    );
    // Counted like the layer: the hard link once as a file, once as a link.
    assert_eq!(preview.files, 4);
    assert_eq!(preview.links, 1);
    assert_eq!(preview.biggest_files[0].path, "/var/log/big.log");
    assert_eq!(preview.biggest_directories[0].path, "/var");
    let excluded: Vec<_> = preview
        .excluded
        .iter()
        .filter(|e| e.entries > 0 || e.pattern == "/nothing/*")
        .map(|e| (e.pattern.as_str(), e.entries, e.files))
        .collect();
    assert_eq!(
        excluded,
        [
            ("/tmp/*", 1, 1),
            ("/srv/app/.env", 1, 1),
            ("/nothing/*", 0, 0)
        ]
    );
    assert_eq!(preview.excluded.len(), excludes.patterns().len());
}

#[test]
fn tricks_at_credential_paths_find_nothing_and_never_block() {
    let root = tempfile::tempdir().unwrap();
    let host = root.path().join("host");
    write(&host.join("netrc"), TOKEN.repeat(1000).as_bytes());
    let up = root.path().join("upper");
    std::fs::create_dir_all(up.join("root/.aws")).unwrap();
    let aws = rustix::fs::open(
        up.join("root/.aws"),
        OFlags::DIRECTORY | OFlags::RDONLY,
        Mode::empty(),
    )
    .unwrap();
    // Opening a FIFO nobody writes to would block for ever; reading the
    // host's /dev/zero would never end.
    rustix::fs::mknodat(
        &aws,
        "credentials",
        FileType::Fifo,
        Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    rustix::fs::mknodat(
        &aws,
        "config",
        FileType::CharacterDevice,
        Mode::from_raw_mode(0o666),
        rustix::fs::makedev(1, 5),
    )
    .unwrap();
    std::os::unix::fs::symlink(host.join("netrc"), up.join("root/.netrc")).unwrap();
    std::os::unix::fs::symlink(&host, up.join("root/.kube")).unwrap();

    let (tx, rx) = std::sync::mpsc::channel();
    let path = up.clone();
    std::thread::spawn(move || tx.send(preview(&path, &Excludes::none())).unwrap());
    let preview = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the preview blocked on a FIFO or a device");
    assert!(
        preview.findings.findings.is_empty(),
        "{:?}",
        preview.findings
    );
    assert_eq!(preview.total_bytes, 0);
    assert_eq!((preview.other, preview.links, preview.files), (2, 2, 0));
    assert_eq!(commit_findings(&up, &Excludes::none()), []);
}

#[test]
fn swapping_a_file_and_a_link_to_the_host_never_shows_the_host() {
    let root = tempfile::tempdir().unwrap();
    let host = root.path().join("host");
    let host_bytes = TOKEN.repeat(2000);
    write(&host.join("tokens"), host_bytes.as_bytes());
    let up = root.path().join("upper");
    let harmless = b"harmless, not a token\n";
    write(&up.join("home/.env"), harmless);
    std::os::unix::fs::symlink(host.join("tokens"), up.join("home/.env.swap")).unwrap();
    let dir = rustix::fs::open(
        up.join("home"),
        OFlags::DIRECTORY | OFlags::RDONLY,
        Mode::empty(),
    )
    .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let swapper = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut swaps = 0;
            while !stop.load(Ordering::Relaxed) {
                if rustix::fs::renameat_with(&dir, ".env", &dir, ".env.swap", RenameFlags::EXCHANGE)
                    .is_ok()
                {
                    swaps += 1;
                }
            }
            swaps
        })
    };
    for _ in 0..300 {
        let preview = preview(&up, &Excludes::none());
        assert!(
            preview.findings.findings.is_empty(),
            "the host's file was read: {:?}",
            preview.findings
        );
        // Each name is pinned on its own: a swap between the two pins shows
        // the harmless file twice, never the host's.
        assert!(preview.total_bytes <= 2 * harmless.len() as u64);
        assert_eq!(preview.files + preview.links, 2);
    }
    stop.store(true, Ordering::Relaxed);
    assert!(
        swapper.join().unwrap() > 1000,
        "the names were hardly swapped"
    );
}

#[test]
fn an_abandoned_preview_stops() {
    let root = tempfile::tempdir().unwrap();
    for i in 0..200 {
        write(&root.path().join(format!("d/f{i}")), b"x");
    }
    let stop = AtomicBool::new(true);
    let result = survey_upper(&upper(root.path()), &Excludes::none(), &stop);
    assert!(result.is_err());
}
