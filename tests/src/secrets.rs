//! Planted secrets for the scan's tests: credentials of every kind the
//! agent's rules know, written where the tools that make them put them,
//! with fresh random values per run, and the finding each must give.
//! Tricks (a FIFO where a credentials file belongs, a link to a host file
//! full of tokens, a token past the scan's cap) must give none.
//!
//! Files are written from the host into the container's root file system
//! (its overlay mount), which is where the desktop's own writes land.

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use serde_json::{Value, json};

/// How much of a file the agent's content rules read.
pub const HEAD_BYTES: usize = node_agent::scan::HEAD_BYTES;

/// What was planted: the findings a scan must report, sorted as the agent
/// sorts them, and every secret value (none may appear in any output).
#[derive(Debug, Default)]
pub struct Planted {
    pub findings: Vec<Value>,
    pub values: Vec<String>,
}

impl Planted {
    /// The findings as the agent's JSON has them (`findings.findings`).
    pub fn expected(&self) -> Value {
        let mut sorted = self.findings.clone();
        sorted.sort_by_key(|f| {
            (
                f["path"].as_str().unwrap_or_default().to_string(),
                f["rule"].as_str().unwrap_or_default().to_string(),
            )
        });
        Value::Array(sorted)
    }

    /// `RULE:PATH` of every SECRET finding, for `--acknowledge`.
    pub fn acknowledgements(&self) -> Vec<String> {
        self.findings
            .iter()
            .filter(|f| f["severity"] == "SECRET")
            .map(|f| {
                format!(
                    "{}:{}",
                    f["rule"].as_str().unwrap(),
                    f["path"].as_str().unwrap()
                )
            })
            .collect()
    }

    /// The paths of every SECRET finding, for `--exclude`.
    pub fn secret_paths(&self) -> Vec<String> {
        self.findings
            .iter()
            .filter(|f| f["severity"] == "SECRET")
            .map(|f| f["path"].as_str().unwrap().to_string())
            .collect()
    }

    /// Fails the test if any planted value is in `text`.
    pub fn assert_absent(&self, what: &str, text: &str) {
        for value in &self.values {
            assert!(
                !text.contains(value.as_str()),
                "a planted secret value is in {what}: {value}"
            );
        }
    }

    fn secret(&mut self, path: &str, rule: &str, line: Option<u32>) {
        self.findings.push(json!({
            "path": path, "rule": rule, "severity": "SECRET", "line": line,
            "size": null, "suggestedExclude": null,
        }));
    }

    fn warning(&mut self, path: &str, rule: &str, size: u64, exclude: &str) {
        self.findings.push(json!({
            "path": path, "rule": rule, "severity": "WARNING", "line": null,
            "size": size, "suggestedExclude": exclude,
        }));
    }

    fn value(&mut self, value: impl Into<String>) -> String {
        let value = value.into();
        self.values.push(value.clone());
        value
    }
}

const ALNUM: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const UPPER_BASE32: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// `n` random characters of `charset`.
pub fn random(charset: &[u8], n: usize) -> String {
    let mut out = String::with_capacity(n);
    while out.len() < n {
        for byte in uuid::Uuid::new_v4().as_bytes() {
            if out.len() < n {
                out.push(charset[*byte as usize % charset.len()] as char);
            }
        }
    }
    out
}

/// A fresh GitHub personal access token (the shape; not a real one).
pub fn github_token() -> String {
    format!("ghp_{}", random(ALNUM, 36))
}

/// Writes `data` at container path `path` under `rootfs`.
pub fn put(rootfs: &Path, path: &str, data: &[u8]) {
    let full = rootfs.join(path.trim_start_matches('/'));
    std::fs::create_dir_all(full.parent().unwrap()).unwrap();
    std::fs::write(&full, data).unwrap_or_else(|e| panic!("{}: {e}", full.display()));
}

/// A sparse file of `size` bytes (zeros; costs no disk).
fn put_sparse(rootfs: &Path, path: &str, size: u64) {
    put(rootfs, path, b"");
    let file = std::fs::File::options()
        .write(true)
        .open(rootfs.join(path.trim_start_matches('/')))
        .unwrap();
    file.set_len(size).unwrap();
}

/// A private key made by the real tool: `ssh-keygen` (OpenSSH format) or
/// `openssl` (PKCS#8 PEM).
fn private_key(scratch: &Path, tool: &str) -> String {
    let file = scratch.join(format!("key-{}", random(ALNUM, 8)));
    let output = match tool {
        "ssh-keygen" => Command::new("ssh-keygen")
            .args([
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                "speaker@desktop",
                "-f",
            ])
            .arg(&file)
            .output(),
        _ => Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
            ])
            .arg(&file)
            .output(),
    }
    .unwrap_or_else(|e| panic!("run {tool}: {e}"));
    assert!(
        output.status.success(),
        "{tool}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let key = std::fs::read_to_string(&file).unwrap();
    let _ = std::fs::remove_file(&file);
    let _ = std::fs::remove_file(file.with_extension("pub"));
    key
}

/// The base64 line of a key that is not a constant header.
fn key_material(key: &str) -> String {
    key.lines()
        .filter(|l| !l.starts_with("-----"))
        .nth(1)
        .or_else(|| key.lines().nth(1))
        .unwrap()
        .to_string()
}

/// Text of `lines` log lines, 100 bytes each.
fn log_lines(lines: usize) -> String {
    let mut text = String::with_capacity(lines * 100);
    for i in 0..lines {
        let line = format!(
            "2026-12-03 10:00:{:02} INFO [worker-{}] GET /api/v1/items/{i} status=200",
            i % 60,
            i % 8
        );
        text.push_str(&format!("{line:<99}\n"));
    }
    text
}

/// Plants a secret of every kind the rules know, the tricks, two size
/// warnings and some harmless look-alikes, under `rootfs`. `scratch` is a
/// host directory for the key tools and the host file the trick links to.
pub fn plant_everything(rootfs: &Path, scratch: &Path) -> Planted {
    let mut p = Planted::default();

    // --- found by where they are
    let ssh = private_key(scratch, "ssh-keygen");
    p.values.push(key_material(&ssh));
    put(rootfs, "/root/.ssh/id_ed25519", ssh.as_bytes());
    p.secret("/root/.ssh/id_ed25519", "ssh-private-key-file", None);
    put(
        rootfs,
        "/root/.ssh/id_ed25519.pub",
        b"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBpublic speaker@desktop\n",
    );
    put(rootfs, "/root/.ssh/known_hosts", b"github.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n");

    let key_id = p.value(format!("AKIA{}", random(UPPER_BASE32, 16)));
    let secret_key = p.value(random(ALNUM, 40));
    put(
        rootfs,
        "/root/.aws/credentials",
        format!("[default]\naws_access_key_id = {key_id}\naws_secret_access_key = {secret_key}\n")
            .as_bytes(),
    );
    p.secret("/root/.aws/credentials", "aws-credentials-file", None);
    put(
        rootfs,
        "/root/.aws/config",
        b"[default]\nregion = eu-west-1\noutput = json\n",
    );

    let refresh = p.value(format!("1//0g{}", random(ALNUM, 60)));
    put(
        rootfs,
        "/home/speaker/.config/gcloud/application_default_credentials.json",
        format!(
            "{{\n  \"client_id\": \"764086051850-6qr4p6gpi6hn506pt8ejuq83di341hur.apps.googleusercontent.com\",\n  \
             \"client_secret\": \"d-FL95Q19q7MQmFpd7hHD0Ty\",\n  \"refresh_token\": \"{refresh}\",\n  \
             \"type\": \"authorized_user\"\n}}\n"
        )
        .as_bytes(),
    );
    p.secret(
        "/home/speaker/.config/gcloud/application_default_credentials.json",
        "gcloud-credentials",
        None,
    );
    let mut sqlite = b"SQLite format 3\0".to_vec();
    sqlite.extend_from_slice(p.value(random(ALNUM, 64)).as_bytes());
    put(
        rootfs,
        "/home/speaker/.config/gcloud/credentials.db",
        &sqlite,
    );
    p.secret(
        "/home/speaker/.config/gcloud/credentials.db",
        "gcloud-credentials",
        None,
    );

    let azure = p.value(random(ALNUM, 80));
    put(
        rootfs,
        "/home/speaker/.azure/msal_token_cache.json",
        format!("{{\"AccessToken\": {{\"x\": {{\"secret\": \"{azure}\"}}}}}}").as_bytes(),
    );
    p.secret(
        "/home/speaker/.azure/msal_token_cache.json",
        "azure-cli-credentials",
        None,
    );

    let kube_token = p.value(random(ALNUM, 48));
    put(
        rootfs,
        "/root/.kube/config",
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    server: https://10.0.0.1:6443\n  name: workshop\n\
             users:\n- name: speaker\n  user:\n    token: {kube_token}\n"
        )
        .as_bytes(),
    );
    p.secret("/root/.kube/config", "kubeconfig-credentials", Some(10));

    let docker_auth = p.value(
        base64::engine::general_purpose::STANDARD.encode(format!("speaker:{}", random(ALNUM, 20))),
    );
    put(
        rootfs,
        "/home/speaker/.docker/config.json",
        format!("{{\n  \"auths\": {{\n    \"registry.example\": {{\n      \"auth\": \"{docker_auth}\"\n    }}\n  }}\n}}\n")
            .as_bytes(),
    );
    p.secret(
        "/home/speaker/.docker/config.json",
        "container-registry-auth",
        Some(4),
    );
    let podman_auth = p.value(
        base64::engine::general_purpose::STANDARD.encode(format!("speaker:{}", random(ALNUM, 20))),
    );
    put(
        rootfs,
        "/root/.config/containers/auth.json",
        format!("{{\n\t\"auths\": {{\n\t\t\"quay.example\": {{\n\t\t\t\"auth\": \"{podman_auth}\"\n\t\t}}\n\t}}\n}}\n")
            .as_bytes(),
    );
    p.secret(
        "/root/.config/containers/auth.json",
        "container-registry-auth",
        Some(4),
    );

    let netrc_password = p.value(random(ALNUM, 16));
    put(
        rootfs,
        "/home/speaker/.netrc",
        format!("machine api.example.com\n  login speaker\n  password {netrc_password}\n")
            .as_bytes(),
    );
    p.secret("/home/speaker/.netrc", "netrc-file", None);

    let git_token = p.value(github_token());
    put(
        rootfs,
        "/root/.git-credentials",
        format!("https://speaker:{git_token}@github.com\n").as_bytes(),
    );
    p.secret("/root/.git-credentials", "git-credentials-file", None);

    let pg_password = p.value(random(ALNUM, 18));
    put(
        rootfs,
        "/home/speaker/.pgpass",
        format!("db.example:5432:workshop:speaker:{pg_password}\n").as_bytes(),
    );
    p.secret("/home/speaker/.pgpass", "pgpass-file", None);

    put(
        rootfs,
        "/home/speaker/.config/chromium/Default/Login Data",
        &sqlite,
    );
    p.secret(
        "/home/speaker/.config/chromium/Default/Login Data",
        "browser-login-database",
        None,
    );
    let firefox = "/home/speaker/.mozilla/firefox/ab12cd34.default-release";
    put(
        rootfs,
        &format!("{firefox}/logins.json"),
        b"{\"nextId\":2,\"logins\":[{\"id\":1,\"hostname\":\"https://example.com\",\"encryptedUsername\":\"MDIEEPgAAA\"}]}",
    );
    p.secret(
        &format!("{firefox}/logins.json"),
        "browser-login-database",
        None,
    );
    put(rootfs, &format!("{firefox}/key4.db"), &sqlite);
    p.secret(
        &format!("{firefox}/key4.db"),
        "browser-login-database",
        None,
    );

    // --- found by content
    let deploy = private_key(scratch, "ssh-keygen");
    p.values.push(key_material(&deploy));
    put(rootfs, "/opt/deploy/deploy_key", deploy.as_bytes());
    p.secret("/opt/deploy/deploy_key", "private-key", Some(1));

    let tls = private_key(scratch, "openssl");
    p.values.push(key_material(&tls));
    put(rootfs, "/srv/app/tls/server.key", tls.as_bytes());
    p.secret("/srv/app/tls/server.key", "private-key", Some(1));

    let aws_id = p.value(format!("AKIA{}", random(UPPER_BASE32, 16)));
    put(
        rootfs,
        "/srv/app/settings.py",
        format!("import os\n\nAWS_ACCESS_KEY_ID = \"{aws_id}\"\nDEBUG = False\n").as_bytes(),
    );
    p.secret("/srv/app/settings.py", "aws-access-key-id", Some(3));

    let gho = p.value(format!("gho_{}", random(ALNUM, 36)));
    put(
        rootfs,
        "/home/speaker/.config/gh/hosts.yml",
        format!(
            "github.com:\n    oauth_token: {gho}\n    user: speaker\n    git_protocol: https\n"
        )
        .as_bytes(),
    );
    p.secret(
        "/home/speaker/.config/gh/hosts.yml",
        "github-token",
        Some(2),
    );

    let glpat = p.value(format!("glpat-{}", random(ALNUM, 20)));
    put(
        rootfs,
        "/root/.python-gitlab.cfg",
        format!("[global]\ndefault = workshop\n[workshop]\nurl = https://gitlab.example\nprivate_token = {glpat}\n").as_bytes(),
    );
    p.secret("/root/.python-gitlab.cfg", "gitlab-token", Some(5));

    let slack = p.value(format!(
        "xoxb-{}-{}-{}",
        random(b"0123456789", 12),
        random(b"0123456789", 13),
        random(ALNUM, 24)
    ));
    put(
        rootfs,
        "/srv/bot/config.yaml",
        format!("name: workshop-bot\nslack_token: {slack}\nchannel: \"#general\"\n").as_bytes(),
    );
    p.secret("/srv/bot/config.yaml", "slack-token", Some(2));

    let hook = p.value(format!(
        "https://hooks.slack.com/services/T{}/B{}/{}",
        random(UPPER_BASE32, 8),
        random(UPPER_BASE32, 10),
        random(ALNUM, 24)
    ));
    put(
        rootfs,
        "/etc/alertmanager/alertmanager.yml",
        format!("route:\n  receiver: slack\nreceivers:\n- name: slack\n  slack_configs:\n  - api_url: {hook}\n").as_bytes(),
    );
    p.secret(
        "/etc/alertmanager/alertmanager.yml",
        "slack-webhook",
        Some(6),
    );

    let stripe = p.value(format!("sk_live_{}", random(ALNUM, 32)));
    put(
        rootfs,
        "/srv/shop/config.js",
        format!("module.exports = {{\n  stripeKey: '{stripe}',\n  currency: 'eur',\n}};\n")
            .as_bytes(),
    );
    p.secret("/srv/shop/config.js", "stripe-live-key", Some(2));

    let google = p.value(format!("AIza{}", random(ALNUM, 35)));
    put(
        rootfs,
        "/srv/web/index.html",
        format!(
            "<!doctype html>\n<html>\n<head>\n<title>Workshop map</title>\n\
             <script src=\"https://maps.googleapis.com/maps/api/js?key={google}\"></script>\n</head>\n</html>\n"
        )
        .as_bytes(),
    );
    p.secret("/srv/web/index.html", "google-api-key", Some(5));

    let url64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let jwt = p.value(format!(
        "{}.{}.{}",
        url64.encode(r#"{"alg":"HS256","typ":"JWT"}"#),
        url64.encode(format!(
            r#"{{"sub":"speaker","sid":"{}"}}"#,
            random(ALNUM, 16)
        )),
        random(ALNUM, 43)
    ));
    put(
        rootfs,
        "/home/speaker/.local/share/workshop-app/session.json",
        format!("{{\"token\": \"{jwt}\"}}\n").as_bytes(),
    );
    p.secret(
        "/home/speaker/.local/share/workshop-app/session.json",
        "jwt",
        Some(1),
    );

    let db_password = p.value(random(ALNUM, 20));
    put(
        rootfs,
        "/srv/app/.env",
        format!("APP_ENV=production\nDATABASE_PASSWORD={db_password}\nPORT=8080\n").as_bytes(),
    );
    p.secret("/srv/app/.env", "env-file-secret", Some(2));
    put(
        rootfs,
        "/srv/app/.env.example",
        b"APP_ENV=development\nDATABASE_PASSWORD=changeme\n",
    );

    let exported = p.value(github_token());
    put(
        rootfs,
        "/root/.ash_history",
        format!("ls\ncd /srv/app\nexport GITHUB_TOKEN={exported}\ngit push\n").as_bytes(),
    );
    p.secret("/root/.ash_history", "shell-history-secret", Some(3));
    // The exported value is a GitHub token: that rule finds it too.
    p.secret("/root/.ash_history", "github-token", Some(3));

    // A token that ends two bytes before the cap (a newline follows it).
    let under = p.value(github_token());
    let mut text = log_lines((HEAD_BYTES - under.len() - 1) / 100);
    let line = text.len() / 100 + 1;
    text.push_str(&" ".repeat(HEAD_BYTES - under.len() - 1 - text.len()));
    text.push_str(&under);
    text.push('\n');
    assert_eq!(text.len(), HEAD_BYTES);
    text.push_str(&log_lines(100));
    put(rootfs, "/srv/data/app.log", text.as_bytes());
    p.secret("/srv/data/app.log", "github-token", Some(line as u32));

    // --- warnings: a huge log and a big cache (sparse: no disk used)
    let huge = 51 << 20;
    put_sparse(rootfs, "/var/log/huge.log", huge);
    p.warning("/var/log/huge.log", "huge-log", huge, "/var/log/huge.log");
    put_sparse(rootfs, "/home/speaker/.cache/pip/wheels/torch.whl", huge);
    p.warning(
        "/home/speaker/.cache",
        "huge-cache",
        huge,
        "/home/speaker/.cache/*",
    );

    // --- tricks: nothing may be found, nothing may block
    let fifo_dir = rootfs.join("home/speaker/.aws");
    std::fs::create_dir_all(&fifo_dir).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        fifo_dir.join("credentials"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    let host_tokens = host_token_file(scratch, &mut p);
    std::os::unix::fs::symlink(&host_tokens, rootfs.join("root/.netrc")).unwrap();
    let past = p.value(github_token());
    let mut text = log_lines(HEAD_BYTES / 100 + 1);
    text.push_str(&past);
    text.push('\n');
    put(rootfs, "/srv/data/past.log", text.as_bytes());

    p
}

/// A host file (outside any container) full of tokens: its values are
/// added to `planted`'s, so finding any of them in an output is a leak.
pub fn host_token_file(scratch: &Path, planted: &mut Planted) -> PathBuf {
    let path = scratch.join(format!("host-tokens-{}", random(ALNUM, 8)));
    let mut text = String::new();
    for _ in 0..2000 {
        let token = github_token();
        text.push_str(&format!("export GITHUB_TOKEN={token}\n"));
        if planted.values.len() < 200 {
            planted.values.push(token);
        }
    }
    std::fs::write(&path, text).unwrap();
    path
}

/// A few secrets (for the Diff-service path, whose layer tar the scan
/// reads instead of the upper directory).
pub fn plant_few(rootfs: &Path) -> Planted {
    let mut p = Planted::default();
    let token = p.value(github_token());
    put(
        rootfs,
        "/home/speaker/.config/gh/hosts.yml",
        format!("github.com:\n    oauth_token: {token}\n").as_bytes(),
    );
    p.secret(
        "/home/speaker/.config/gh/hosts.yml",
        "github-token",
        Some(2),
    );
    let password = p.value(random(ALNUM, 16));
    put(
        rootfs,
        "/root/.netrc",
        format!("machine example.com login me password {password}\n").as_bytes(),
    );
    p.secret("/root/.netrc", "netrc-file", None);
    let db = p.value(random(ALNUM, 20));
    put(
        rootfs,
        "/srv/app/.env",
        format!("A=1\nB=2\nAPI_TOKEN={db}\n").as_bytes(),
    );
    p.secret("/srv/app/.env", "env-file-secret", Some(3));
    p
}
