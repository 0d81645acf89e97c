//! A throwaway PostgreSQL for tests: one server per test binary, one fresh database per test.
//!
//! [`test_database`] gives a test its own database. The server behind it is, in order of preference:
//!
//! 1. the one `ISSUER_TEST_DATABASE_URL` names (`postgres://user:pw@host:port/db`; the role needs `CREATEDB`): each
//!    test gets a new database on it, dropped when the test ends;
//! 2. a server started here from the installed binaries: `initdb` and `pg_ctl` found on `PATH`, in
//!    `ISSUER_TEST_PG_BIN`, or in `/usr/lib/postgresql/<version>/bin` (Debian's `postgresql` package). The cluster
//!    lives in a temporary directory and listens only on a unix socket there (no TCP port, no clash between parallel
//!    runs). PostgreSQL refuses to run as root, so as root `initdb` and `pg_ctl` run as the user
//!    `ISSUER_TEST_PG_USER` (default `postgres`, which the Debian package creates) through `runuser`.
//!
//! The server is started once per test binary and stopped when the test process ends, however it ends (normally, by
//! a panic, or killed): a small watchdog process waits for the end of a pipe the test process holds open, then stops
//! the server and deletes its directory. (A `static` is never dropped, so a `Drop` impl could not do this.)
//!
//! Without PostgreSQL, [`test_database`] prints a loud `SKIPPED` message and returns `None`; when the environment
//! variable `CI` is set, it panics instead, so CI never passes by skipping.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};

use sqlx::Connection as _;

/// The environment variable naming an existing PostgreSQL to use instead of starting one.
pub const DATABASE_URL_VAR: &str = "ISSUER_TEST_DATABASE_URL";

/// A database for one test; dropped (on an external server) when this value is dropped.
#[derive(Debug)]
pub struct TestDatabase {
    url: String,
    name: String,
    drop_on_exit: Option<String>,
}

impl TestDatabase {
    /// The database's URL, for `issuer::connect_store` or `ISSUER_DATABASE_URL`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some(admin_url) = self.drop_on_exit.take() else { return };
        let name = self.name.clone();
        // Drop runs outside any async context we could borrow; a short-lived runtime on its own thread does it.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            rt.block_on(async {
                let mut conn = sqlx::PgConnection::connect(&admin_url).await.ok()?;
                sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")).execute(&mut conn).await.ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(_))) {
            let _ = writeln!(std::io::stderr(), "warning: could not drop test database {}", self.name);
        }
    }
}

/// A new, empty database for the test `test` (the name only helps to find it), or `None` after printing why when no
/// PostgreSQL is available. Panics instead of returning `None` when `CI` is set.
pub async fn test_database(test: &str) -> Option<TestDatabase> {
    let server = match server() {
        Ok(server) => server,
        Err(reason) => return skip(test, reason),
    };
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let slug: String =
        test.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' }).take(30).collect();
    let name = format!("issuer_t{}_{}_{slug}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
    let mut conn = sqlx::PgConnection::connect(&server.admin_url)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to the test PostgreSQL: {e}"));
    sqlx::raw_sql(&format!("CREATE DATABASE \"{name}\""))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("cannot create test database {name} (does the role have CREATEDB?): {e}"));
    let _ = conn.close().await;
    Some(TestDatabase {
        url: with_database(&server.admin_url, &name),
        name,
        drop_on_exit: server.external.then(|| server.admin_url.clone()),
    })
}

/// Whether the environment variable `CI` asks for every test to run (set and not `false` or `0`).
pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

fn skip<T>(test: &str, reason: &str) -> Option<T> {
    if ci() {
        panic!("PostgreSQL is required when CI is set, but it is not available: {reason}");
    }
    static BANNER: OnceLock<()> = OnceLock::new();
    // Written to the real stderr, not through the test harness's captured `eprintln!`, so it shows for passing
    // tests too.
    let mut err = std::io::stderr().lock();
    BANNER.get_or_init(|| {
        let _ = writeln!(
            err,
            "\n**********\nSKIPPED: PostgreSQL not available ({reason}).\nThe PostgreSQL tests of this binary did NOT \
             run. Install the PostgreSQL server (Debian: apt-get install postgresql) or set {DATABASE_URL_VAR}.\n\
             **********"
        );
    });
    let _ = writeln!(err, "SKIPPED: PostgreSQL not available: {test}");
    None
}

/// The server tests in this process share.
struct Server {
    /// URL of the maintenance database (`postgres`) or of `ISSUER_TEST_DATABASE_URL`.
    admin_url: String,
    /// Whether the server is not ours (test databases are then dropped after each test).
    external: bool,
    /// The write end of the watchdog's stdin: closed by the OS when this process ends, which stops the server.
    _watchdog: Option<Mutex<(Child, ChildStdin)>>,
}

fn server() -> Result<&'static Server, &'static str> {
    static SERVER: OnceLock<Result<Server, String>> = OnceLock::new();
    SERVER
        .get_or_init(|| match std::env::var(DATABASE_URL_VAR) {
            Ok(url) if !url.is_empty() => Ok(Server { admin_url: url, external: true, _watchdog: None }),
            _ => start_server(),
        })
        .as_ref()
        .map_err(String::as_str)
}

/// `url` with its database name replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    // The path starts at the first '/' after "scheme://authority".
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let base = match base[authority_start..].find('/') {
        Some(i) => &base[..authority_start + i],
        None => base,
    };
    match query {
        Some(query) => format!("{base}/{name}?{query}"),
        None => format!("{base}/{name}"),
    }
}

fn start_server() -> Result<Server, String> {
    let bin =
        find_bin_dir().ok_or("no initdb and pg_ctl on PATH, in ISSUER_TEST_PG_BIN or /usr/lib/postgresql/*/bin")?;
    let run_as = run_as_user()?;
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let dir = std::env::temp_dir().join(format!("issuer-pg-{}-{stamp:x}", std::process::id()));
    std::fs::create_dir(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let started = start_in(&bin, &dir, run_as.as_ref());
    if started.is_err() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    started
}

fn start_in(bin: &Path, dir: &Path, run_as: Option<&RunAs>) -> Result<Server, String> {
    if let Some(user) = run_as {
        std::os::unix::fs::chown(dir, Some(user.uid), Some(user.gid))
            .map_err(|e| format!("cannot give {} to {}: {e}", dir.display(), user.name))?;
    }
    let data = dir.join("data");
    let tool = |name: &str| -> Command {
        let program = bin.join(name);
        match run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", &user.name, "--"]).arg(program);
                c
            }
            None => Command::new(program),
        }
    };
    let output = tool("initdb")
        .arg("-D")
        .arg(&data)
        .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync"])
        .output()
        .map_err(|e| format!("cannot run initdb: {e}"))?;
    if !output.status.success() {
        return Err(format!("initdb failed: {}", String::from_utf8_lossy(&output.stderr).trim()));
    }
    // Unix socket only, in the temporary directory; durability switched off (a test cluster is thrown away).
    let server_options = format!(
        "-k {} -c listen_addresses='' -c max_connections=300 -c fsync=off -c synchronous_commit=off \
         -c full_page_writes=off",
        dir.display()
    );
    let output = tool("pg_ctl")
        .arg("-D")
        .arg(&data)
        .arg("-l")
        .arg(dir.join("server.log"))
        .args(["-o", &server_options, "-w", "-t", "60", "start"])
        .stdout(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run pg_ctl: {e}"))?;
    if !output.status.success() {
        let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
        return Err(format!("pg_ctl start failed: {} {log}", String::from_utf8_lossy(&output.stderr).trim()));
    }
    let stop = tool("pg_ctl");
    let watchdog = spawn_watchdog(stop, &data, dir)?;
    Ok(Server {
        admin_url: format!("postgres://postgres@localhost/postgres?host={}", dir.display()),
        external: false,
        _watchdog: Some(Mutex::new(watchdog)),
    })
}

/// Starts `sh`, which waits until its stdin closes (this process ended), then stops the server and removes `dir`.
fn spawn_watchdog(stop: Command, data: &Path, dir: &Path) -> Result<(Child, ChildStdin), String> {
    let mut stop_line = shell_quote(&stop.get_program().to_string_lossy());
    for arg in stop.get_args() {
        stop_line.push(' ');
        stop_line.push_str(&shell_quote(&arg.to_string_lossy()));
    }
    let script = format!(
        "trap '' INT HUP; cat >/dev/null; {stop_line} -D {} -m immediate -w stop >/dev/null 2>&1; rm -rf {}",
        shell_quote(&data.to_string_lossy()),
        shell_quote(&dir.to_string_lossy()),
    );
    let mut command = Command::new("sh");
    command.args(["-c", &script]).stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::null());
    // Its own process group: a Ctrl-C in the terminal stops the tests, not the watchdog.
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let mut child = command.spawn().map_err(|e| format!("cannot start the watchdog: {e}"))?;
    let stdin = child.stdin.take().ok_or("the watchdog has no stdin")?;
    Ok((child, stdin))
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn find_bin_dir() -> Option<PathBuf> {
    let has_tools = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Some(dir) = std::env::var_os("ISSUER_TEST_PG_BIN").map(PathBuf::from) {
        return has_tools(&dir).then_some(dir);
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if has_tools(&dir) {
                // Resolve symlinks (Debian's /usr/bin wrappers are not the server binaries' directory).
                let initdb = std::fs::canonicalize(dir.join("initdb")).ok()?;
                let real = initdb.parent()?.to_path_buf();
                return Some(if has_tools(&real) { real } else { dir });
            }
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin)| has_tools(bin))
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

struct RunAs {
    name: String,
    uid: u32,
    gid: u32,
}

/// As root: the user to run the server as. Otherwise `None` (run as ourselves).
fn run_as_user() -> Result<Option<RunAs>, String> {
    let id = |args: &[&str]| -> Option<u32> {
        let out = Command::new("id").args(args).output().ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().parse().ok())?
    };
    if id(&["-u"]) != Some(0) {
        return Ok(None);
    }
    let name = std::env::var("ISSUER_TEST_PG_USER").unwrap_or_else(|_| "postgres".into());
    match (id(&["-u", &name]), id(&["-g", &name])) {
        (Some(uid), Some(gid)) if uid != 0 => Ok(Some(RunAs { name, uid, gid })),
        _ => Err(format!(
            "running as root, and PostgreSQL refuses root: need a user `{name}` to run it as (set ISSUER_TEST_PG_USER)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_name_is_replaced_in_urls() {
        assert_eq!(with_database("postgres://u:p@h:5432/postgres", "t1"), "postgres://u:p@h:5432/t1");
        assert_eq!(with_database("postgres://u@h", "t1"), "postgres://u@h/t1");
        assert_eq!(
            with_database("postgres://postgres@localhost/postgres?host=/tmp/x", "t1"),
            "postgres://postgres@localhost/t1?host=/tmp/x"
        );
    }
}
