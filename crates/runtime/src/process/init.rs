//! The helper processes of the process runtime: the `kumo` binary re-executed as
//! `kumo runtime-init <role> …`, because namespaces must be joined by a single-threaded process
//! (no tokio yet) and `unsafe` (fork/pre_exec) is not allowed in kumo.
//!
//! Roles:
//! - `pause <sandbox dir>`: holds the pod's network/UTS/IPC namespaces (the pause container);
//!   with a bridge network it also runs the pod side of it, as the kubelet writes to its stdin.
//! - `monitor <container dir>`: the per-container supervisor (like containerd-shim/conmon). Joins
//!   the pod's namespaces, unshares a pid namespace, starts `start`, copies the container's
//!   stdout/stderr into the CRI log file, waits for it and records the exit (code, signal, OOM).
//!   It runs in its own process group, so the kubelet can restart without killing containers.
//! - `start <container dir>`: becomes pid 1 of the container: new mount namespace, cgroup,
//!   overlay root filesystem, /proc /dev /sys, bind mounts, pivot_root, user, then `execve`s the
//!   command. Errors before the exec go back to the monitor over a close-on-exec pipe on stdin.
//! - `exec <container dir> -- CMD…`: joins a running container (cgroup, ipc, uts, net, pid, mnt)
//!   and runs a command there with the container's environment (`kubectl exec`, exec probes).
//! - `nsexec <netns path> CMD…`: runs a host command inside a network namespace (a debugging aid:
//!   the pod network's inside half runs in `pause`, which is in the namespace already).
//! - `probe`: exits 0 when this host lets us create namespaces.

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Component, Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};
use nix::sys::signal::{SigSet, Signal};
use nix::unistd::{Gid, Uid};

use super::cgroup::Cgroups;
use super::logs::{CriLogWriter, Stream};
use super::state::{
    ContainerRecord, ExitRecord, NetMode, ProcState, SandboxRecord, read_json, write_json,
};

/// The hidden subcommand name.
pub const SUBCOMMAND: &str = "runtime-init";

/// Runs a helper role when the process was started as `<bin> runtime-init …`; `None` otherwise.
/// Call it first thing in `main`, before any thread or async runtime exists.
pub fn run_if_requested() -> Option<ExitCode> {
    let args: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    if args.get(1).map(String::as_str) != Some(SUBCOMMAND) {
        return None;
    }
    let rest = &args[2..];
    let result = match rest.first().map(String::as_str) {
        Some("pause") => arg(rest, 1).and_then(|d| pause(Path::new(d))),
        Some("monitor") => arg(rest, 1).and_then(|d| monitor(Path::new(d))),
        Some("start") => arg(rest, 1).and_then(|d| start(Path::new(d))),
        Some("exec") => {
            arg(rest, 1).and_then(|d| exec(Path::new(d), after_dashes(rest), exec_opts(rest)))
        }
        Some("nsexec") => arg(rest, 1).and_then(|ns| nsexec(ns, &rest[2..])),
        Some("probe") => probe(),
        other => Err(io::Error::other(format!(
            "unknown runtime-init role {other:?}"
        ))),
    };
    Some(match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            report(&format!("kumo runtime-init: {e}"));
            ExitCode::from(125)
        }
    })
}

fn arg(rest: &[String], i: usize) -> io::Result<&str> {
    rest.get(i)
        .map(String::as_str)
        .ok_or_else(|| io::Error::other("missing argument"))
}

fn after_dashes(rest: &[String]) -> &[String] {
    match rest.iter().position(|a| a == "--") {
        Some(i) => &rest[i + 1..],
        None => &rest[rest.len().min(2)..],
    }
}

#[allow(clippy::print_stderr)]
fn report(msg: &str) {
    eprintln!("{msg}");
}

fn nix_err(what: &str) -> impl FnOnce(nix::Error) -> io::Error + '_ {
    move |e| io::Error::other(format!("{what}: {e}"))
}

fn exit_code_of(status: std::process::ExitStatus) -> i32 {
    match (status.code(), status.signal()) {
        (Some(c), _) => c,
        (None, Some(s)) => 128 + s,
        _ => 255,
    }
}

// ---------------------------------------------------------------- probe / nsexec

fn probe() -> io::Result<u8> {
    unshare(
        CloneFlags::CLONE_NEWNS
            | CloneFlags::CLONE_NEWPID
            | CloneFlags::CLONE_NEWNET
            | CloneFlags::CLONE_NEWUTS
            | CloneFlags::CLONE_NEWIPC,
    )
    .map_err(nix_err("unshare"))?;
    Ok(0)
}

fn nsexec(netns: &str, cmd: &[String]) -> io::Result<u8> {
    let ns = File::open(netns)?;
    setns(ns.as_fd(), CloneFlags::CLONE_NEWNET).map_err(nix_err("setns net"))?;
    let (prog, args) = cmd
        .split_first()
        .ok_or_else(|| io::Error::other("nsexec: no command"))?;
    let status = Command::new(prog).args(args).status()?;
    Ok(exit_code_of(status).clamp(0, 255) as u8)
}

// ---------------------------------------------------------------- pause

fn pause(sdir: &Path) -> io::Result<u8> {
    let rec: SandboxRecord = read_json(&sdir.join("sandbox.json"))?;
    if rec.isolated {
        if let Some(rel) = &rec.cgroup {
            Cgroups::detect().enter_self(&format!("{rel}/pause"))?;
        }
        let mut flags = CloneFlags::CLONE_NEWIPC;
        if rec.net_mode != NetMode::Host {
            flags |= CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWUTS;
        }
        unshare(flags).map_err(nix_err("unshare"))?;
        if rec.net_mode != NetMode::Host && !rec.hostname.is_empty() {
            nix::unistd::sethostname(&rec.hostname).map_err(nix_err("sethostname"))?;
        }
        if rec.net_mode == NetMode::Loopback {
            ip_batch("link set lo up\n").map_err(io::Error::other)?;
        }
    }
    fs::write(sdir.join("ready"), std::process::id().to_string())?;
    if rec.isolated && rec.net_mode == NetMode::Bridge {
        pod_network(sdir)?;
    }
    // Hold the namespaces until killed, or until the sandbox's state directory is deleted
    // under us (`kumo delete`, a removed test directory): then nothing can ever stop this
    // sandbox, so it goes by itself and takes its pod cgroup along.
    while sdir.join("sandbox.json").exists() {
        std::thread::sleep(std::time::Duration::from_secs(2));
    }
    if let Some(rel) = &rec.cgroup {
        let cgroups = Cgroups::detect();
        // Out of the pod's cgroup first: a cgroup with a process in it cannot be removed.
        let _ = cgroups.enter_self("");
        for _ in 0..30 {
            let _ = cgroups.remove(&format!("{rel}/pause"));
            if cgroups.pids(rel).is_empty() && cgroups.remove(rel).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
    }
    Ok(0)
}

/// The pod's side of its bridge network, run here because this process is already inside the
/// namespace: once the kubelet has created the veth pair it writes the `ip -batch` commands
/// (loopback up, `eth0` address and route) to our stdin and closes it. The outcome goes to
/// `net-ok` (empty) or `net-error` (the message), which the kubelet waits for. An empty input
/// (the kubelet gave up on the host side) still brings loopback up.
fn pod_network(sdir: &Path) -> io::Result<()> {
    let mut batch = String::new();
    let _ = io::stdin().read_to_string(&mut batch);
    if batch.trim().is_empty() {
        batch = "link set lo up\n".into();
    }
    match ip_batch(&batch) {
        Ok(()) => fs::write(sdir.join("net-ok"), b""),
        Err(msg) => {
            let tmp = sdir.join("net-error.tmp");
            fs::write(&tmp, msg)?;
            fs::rename(tmp, sdir.join("net-error"))
        }
    }
}

/// Runs `ip -batch -` in this process's network namespace; the error is `ip`'s message.
fn ip_batch(batch: &str) -> Result<(), String> {
    let run = || -> io::Result<std::process::Output> {
        let mut child = Command::new("ip")
            .args(["-batch", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(batch.as_bytes())?;
        }
        child.wait_with_output()
    };
    match run() {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!(
            "ip -batch in the pod's network namespace ({}): {}",
            batch.trim().replace('\n', "; "),
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Err(format!("ip: {e}")),
    }
}

// ---------------------------------------------------------------- monitor

fn monitor(cdir: &Path) -> io::Result<u8> {
    // No signal blocking here: a blocked mask would be inherited by the container. The
    // monitor has its own process group, so terminal/group signals aimed at the kubelet miss it.
    let rec: ContainerRecord = read_json(&cdir.join("container.json"))?;
    if let Some(me) = ProcState::of(std::process::id() as i32) {
        write_json(&cdir.join("monitor.json"), &me)?;
    }
    if let Some(parent) = rec.log_path.parent() {
        fs::create_dir_all(parent)?;
    }
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&rec.log_path)?;
    let mut writer = CriLogWriter::new(log);
    let cgroups = Cgroups::detect();

    let mut start_error: Option<String> = None;
    let spawned = if rec.isolated {
        spawn_isolated(cdir, &rec)
    } else {
        spawn_plain(cdir, &rec)
    };
    let mut child = match spawned {
        Ok((child, Some(err))) => {
            start_error = Some(err);
            child
        }
        Ok((child, None)) => {
            if let Some(state) = ProcState::of(child.id() as i32) {
                write_json(&cdir.join("started.json"), &state)?;
            }
            child
        }
        Err(e) => {
            let exit = ExitRecord {
                exit_code: 128,
                signal: None,
                oom_killed: false,
                finished_at: jiff::Timestamp::now(),
                start_error: Some(e.to_string()),
                unknown: false,
            };
            write_json(&cdir.join("exit.json"), &exit)?;
            return Ok(0);
        }
    };

    let status = pump(&mut child, &mut writer, cdir, &rec, &cgroups)?;
    if !cdir.join("container.json").exists() {
        // Our state directory was deleted: nobody is left to read an exit record.
        if let Some(rel) = &rec.cgroup {
            let _ = cgroups.remove(rel);
        }
        return Ok(0);
    }
    let signal = status.signal();
    let mut exit_code = exit_code_of(status);
    let oom_killed = signal == Some(Signal::SIGKILL as i32)
        && rec
            .cgroup
            .as_deref()
            .and_then(|rel| cgroups.oom_kills(rel))
            .is_some_and(|n| n > 0);
    if start_error.is_some() {
        exit_code = 128;
    }
    let exit = ExitRecord {
        exit_code,
        signal,
        oom_killed,
        finished_at: jiff::Timestamp::now(),
        start_error,
        unknown: false,
    };
    write_json(&cdir.join("exit.json"), &exit)?;
    Ok(0)
}

/// Copies the child's stdout/stderr into the log until both close (or the child is gone and
/// nothing more arrives: a daemonised grandchild keeping the pipe open must not hold the
/// exit record back), then returns its exit status.
fn pump(
    child: &mut std::process::Child,
    writer: &mut CriLogWriter,
    cdir: &Path,
    rec: &ContainerRecord,
    cgroups: &Cgroups,
) -> io::Result<std::process::ExitStatus> {
    let mut last_check = std::time::Instant::now();
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut out = child.stdout.take();
    let mut err = child.stderr.take();
    let mut exited: Option<std::process::ExitStatus> = None;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if out.is_none() && err.is_none() {
            break;
        }
        let timeout = if exited.is_some() { 100u16 } else { 500u16 };
        let (out_ready, err_ready) = {
            let mut fds = Vec::new();
            if let Some(o) = &out {
                fds.push(PollFd::new(o.as_fd(), PollFlags::POLLIN));
            }
            if let Some(e) = &err {
                fds.push(PollFd::new(e.as_fd(), PollFlags::POLLIN));
            }
            match poll(&mut fds, PollTimeout::from(timeout)) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(io::Error::from(e)),
            }
            let ready = |f: &PollFd<'_>| f.revents().is_some_and(|r| !r.is_empty());
            let mut it = fds.iter();
            let o = if out.is_some() {
                it.next().is_some_and(ready)
            } else {
                false
            };
            let e = if err.is_some() {
                it.next().is_some_and(ready)
            } else {
                false
            };
            (o, e)
        };
        if out_ready && let Some(o) = out.as_mut() {
            let n = o.read(&mut buf)?;
            if n == 0 {
                writer.finish(Stream::Stdout)?;
                out = None;
            } else {
                writer.feed(Stream::Stdout, &buf[..n])?;
            }
        }
        if err_ready && let Some(e) = err.as_mut() {
            let n = e.read(&mut buf)?;
            if n == 0 {
                writer.finish(Stream::Stderr)?;
                err = None;
            } else {
                writer.feed(Stream::Stderr, &buf[..n])?;
            }
        }
        if exited.is_none() {
            exited = child.try_wait()?;
            // A container whose state directory was deleted can never be stopped through the
            // runtime again: end it rather than leak it.
            if exited.is_none() && last_check.elapsed() > std::time::Duration::from_secs(2) {
                last_check = std::time::Instant::now();
                if !cdir.join("container.json").exists() {
                    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
                    let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
                    if !rec.isolated {
                        let group = nix::unistd::Pid::from_raw(-(child.id() as i32));
                        let _ = nix::sys::signal::kill(group, Signal::SIGKILL);
                    }
                    if let Some(rel) = &rec.cgroup {
                        cgroups.kill_all(rel);
                    }
                }
            }
        } else if !out_ready && !err_ready {
            writer.finish(Stream::Stdout)?;
            writer.finish(Stream::Stderr)?;
            break;
        }
    }
    match exited {
        Some(s) => Ok(s),
        None => child.wait(),
    }
}

/// Joins the pod's namespaces, unshares a pid namespace for the child and starts `start`.
/// Returns the child and the error it reported before exec, if any.
fn spawn_isolated(
    cdir: &Path,
    rec: &ContainerRecord,
) -> io::Result<(std::process::Child, Option<String>)> {
    let sandbox_pid = rec
        .sandbox_pid
        .ok_or_else(|| io::Error::other("sandbox has no namespace holder"))?;
    for (ns, flag) in [
        ("ipc", CloneFlags::CLONE_NEWIPC),
        ("uts", CloneFlags::CLONE_NEWUTS),
        ("net", CloneFlags::CLONE_NEWNET),
    ] {
        let f = File::open(format!("/proc/{sandbox_pid}/ns/{ns}"))
            .map_err(|e| io::Error::new(e.kind(), format!("pod sandbox is gone ({ns}): {e}")))?;
        setns(f.as_fd(), flag).map_err(nix_err("setns"))?;
    }
    unshare(CloneFlags::CLONE_NEWPID).map_err(nix_err("unshare pid"))?;
    let (status_r, status_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(nix_err("pipe"))?;
    let exe = std::env::current_exe()?;
    let child = Command::new(exe)
        .arg(SUBCOMMAND)
        .arg("start")
        .arg(cdir)
        .stdin(Stdio::from(status_w))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut msg = String::new();
    File::from(status_r).read_to_string(&mut msg)?;
    Ok((child, (!msg.is_empty()).then_some(msg)))
}

/// Without namespaces: the command runs as a plain process in a work directory, with the
/// image's files found through its unpacked root filesystem.
fn spawn_plain(
    cdir: &Path,
    rec: &ContainerRecord,
) -> io::Result<(std::process::Child, Option<String>)> {
    let (prog, args) = rec
        .argv
        .split_first()
        .ok_or_else(|| io::Error::other("no command"))?;
    let path = rec
        .env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    let resolved = plain_lookup(&rec.image_rootfs, prog, path).ok_or_else(|| {
        io::Error::other(format!(
            "exec: \"{prog}\": executable file not found in $PATH"
        ))
    })?;
    let work = cdir.join("work");
    fs::create_dir_all(&work)?;
    restore_transparent_huge_pages();
    let child = Command::new(&resolved)
        .arg0(prog)
        .args(args)
        .env_clear()
        .envs(rec.env.iter().filter_map(|e| e.split_once('=')))
        .current_dir(&work)
        // Its own process group, so stop/kill reach the children it forks too.
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    Ok((child, None))
}

/// `prog` looked up in the image rootfs first (so busybox applets work), then on the host.
pub(crate) fn plain_lookup(rootfs: &Path, prog: &str, path: &str) -> Option<PathBuf> {
    if prog.contains('/') {
        let in_image = rootfs.join(prog.trim_start_matches('/'));
        if is_executable(&in_image) {
            return Some(in_image);
        }
        return is_executable(Path::new(prog)).then(|| PathBuf::from(prog));
    }
    for dir in path.split(':').filter(|d| !d.is_empty()) {
        let c = rootfs.join(dir.trim_start_matches('/')).join(prog);
        if is_executable(&c) {
            return Some(c);
        }
    }
    let host_path = std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into());
    host_path
        .split(':')
        .map(|d| Path::new(d).join(prog))
        .find(|c| is_executable(c))
}

fn is_executable(p: &Path) -> bool {
    fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The kubelet runs its helpers with transparent huge pages off (see
/// [`super::disable_transparent_huge_pages`]); the flag survives `execve`, so it is switched
/// back on right before a container's own command runs: containers get the host's THP policy,
/// as under any other runtime.
fn restore_transparent_huge_pages() {
    let _ = nix::sys::prctl::set_thp_disable(false);
}

// ---------------------------------------------------------------- start (container pid 1)

fn start(cdir: &Path) -> io::Result<u8> {
    // Errors go to the monitor through stdin (a close-on-exec copy, so the pipe closes exactly
    // when the exec succeeds); the container's own stdin is /dev/null.
    let status = nix::unistd::dup(io::stdin().as_fd()).map_err(nix_err("dup"))?;
    fcntl(status.as_fd(), FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).map_err(nix_err("fcntl"))?;
    let devnull = File::open("/dev/null")?;
    nix::unistd::dup2_stdin(devnull.as_fd()).map_err(nix_err("dup2"))?;
    drop(devnull);
    let mut status = File::from(status);
    match start_inner(cdir) {
        Ok(never) => match never {},
        Err(e) => {
            let _ = status.write_all(e.to_string().as_bytes());
            Ok(127)
        }
    }
}

enum Never {}

fn start_inner(cdir: &Path) -> io::Result<Never> {
    // The command starts with no blocked signals whatever its ancestors had blocked.
    SigSet::all()
        .thread_unblock()
        .map_err(nix_err("unblock signals"))?;
    let rec: ContainerRecord = read_json(&cdir.join("container.json"))?;
    unshare(CloneFlags::CLONE_NEWNS).map_err(nix_err("unshare mnt"))?;
    // Nothing mounted here may propagate back to the host.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(nix_err("make / private"))?;
    if let Some(rel) = &rec.cgroup {
        Cgroups::detect().enter_self(rel)?;
    }

    let rootfs = cdir.join("rootfs");
    let upper = cdir.join("upper");
    let work = cdir.join("overlay-work");
    for d in [&rootfs, &upper, &work] {
        fs::create_dir_all(d)?;
    }
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        rec.image_rootfs.display(),
        upper.display(),
        work.display()
    );
    let overlay = if rec.copy_rootfs {
        Err(nix::errno::Errno::EOPNOTSUPP)
    } else {
        mount(
            Some("overlay"),
            &rootfs,
            Some("overlay"),
            MsFlags::empty(),
            Some(opts.as_str()),
        )
    };
    if let Err(e) = overlay {
        // No overlayfs (or an overlay upper dir): a private copy of the image instead.
        if !rec.copy_rootfs {
            report(&format!(
                "overlay mount failed ({e}); copying the image root filesystem"
            ));
        }
        let copy = cdir.join("rootfs-copy");
        if !copy.exists() {
            let tmp = cdir.join("rootfs-copy.tmp");
            let _ = fs::remove_dir_all(&tmp);
            copy_tree(&rec.image_rootfs, &tmp)?;
            fs::rename(&tmp, &copy)?;
        }
        mount(
            Some(&copy),
            &rootfs,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(nix_err("bind rootfs copy"))?;
    }

    setup_proc_sys_dev(&rootfs, rec.privileged)?;
    for m in &rec.mounts {
        bind_mount(&rootfs, &m.host_path, &m.container_path, m.read_only)?;
    }

    // pivot_root(".", ".") then detach the old root, as runc does.
    nix::unistd::chdir(&rootfs).map_err(nix_err("chdir rootfs"))?;
    nix::unistd::pivot_root(".", ".").map_err(nix_err("pivot_root"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(nix_err("detach old root"))?;
    nix::unistd::chdir("/").map_err(nix_err("chdir /"))?;

    let wd = if rec.working_dir.is_empty() {
        "/"
    } else {
        rec.working_dir.as_str()
    };
    fs::create_dir_all(wd)?;
    if rec.uid != 0 || rec.gid != 0 {
        let _ = std::os::unix::fs::chown(wd, None, None);
    }
    nix::unistd::chdir(wd).map_err(nix_err("chdir working dir"))?;

    let (prog, _) = rec
        .argv
        .split_first()
        .ok_or_else(|| io::Error::other("no command given and the image has none"))?;
    let path_env = rec
        .env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    let exe = lookup_in_root(prog, path_env).ok_or_else(|| {
        io::Error::other(format!(
            "exec: \"{prog}\": executable file not found in $PATH"
        ))
    })?;

    let gid = Gid::from_raw(rec.gid);
    nix::unistd::setgroups(&[gid]).map_err(nix_err("setgroups"))?;
    nix::unistd::setgid(gid).map_err(nix_err("setgid"))?;
    nix::unistd::setuid(Uid::from_raw(rec.uid)).map_err(nix_err("setuid"))?;

    let cstr =
        |s: &str| CString::new(s).map_err(|_| io::Error::other(format!("NUL byte in {s:?}")));
    let path_c = cstr(&exe.to_string_lossy())?;
    let argv: Vec<CString> = rec
        .argv
        .iter()
        .map(|a| cstr(a))
        .collect::<io::Result<_>>()?;
    let envp: Vec<CString> = rec.env.iter().map(|e| cstr(e)).collect::<io::Result<_>>()?;
    restore_transparent_huge_pages();
    let err = nix::unistd::execve(&path_c, &argv, &envp).err();
    Err(io::Error::other(format!(
        "exec {}: {}",
        exe.display(),
        err.map(|e| e.to_string()).unwrap_or_default()
    )))
}

/// Looks `prog` up on `PATH` inside the (already pivoted) container root.
fn lookup_in_root(prog: &str, path: &str) -> Option<PathBuf> {
    if prog.contains('/') {
        return is_executable(Path::new(prog)).then(|| PathBuf::from(prog));
    }
    path.split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(prog))
        .find(|c| is_executable(c))
}

fn setup_proc_sys_dev(rootfs: &Path, privileged: bool) -> io::Result<()> {
    let nosuid_nodev_noexec = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let proc_dir = secure_join(rootfs, "/proc")?;
    fs::create_dir_all(&proc_dir)?;
    mount(
        Some("proc"),
        &proc_dir,
        Some("proc"),
        nosuid_nodev_noexec,
        None::<&str>,
    )
    .map_err(nix_err("mount /proc"))?;

    let sys_dir = secure_join(rootfs, "/sys")?;
    fs::create_dir_all(&sys_dir)?;
    let ro = if privileged {
        MsFlags::empty()
    } else {
        MsFlags::MS_RDONLY
    };
    if mount(
        Some("sysfs"),
        &sys_dir,
        Some("sysfs"),
        nosuid_nodev_noexec | ro,
        None::<&str>,
    )
    .is_err()
    {
        mount(
            Some("/sys"),
            &sys_dir,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(nix_err("bind /sys"))?;
        let _ = mount(
            None::<&str>,
            &sys_dir,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | ro,
            None::<&str>,
        );
    }

    let dev = secure_join(rootfs, "/dev")?;
    fs::create_dir_all(&dev)?;
    mount(
        Some("tmpfs"),
        &dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID,
        Some("mode=755,size=65536k"),
    )
    .map_err(nix_err("mount /dev"))?;
    for name in ["null", "zero", "full", "random", "urandom", "tty"] {
        let target = dev.join(name);
        File::create(&target)?;
        mount(
            Some(&Path::new("/dev").join(name)),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(nix_err("bind device"))?;
    }
    let pts = dev.join("pts");
    fs::create_dir_all(&pts)?;
    mount(
        Some("devpts"),
        &pts,
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    )
    .map_err(nix_err("mount /dev/pts"))?;
    std::os::unix::fs::symlink("pts/ptmx", dev.join("ptmx"))?;
    let shm = dev.join("shm");
    fs::create_dir_all(&shm)?;
    mount(
        Some("shm"),
        &shm,
        Some("tmpfs"),
        nosuid_nodev_noexec,
        Some("mode=1777,size=65536k"),
    )
    .map_err(nix_err("mount /dev/shm"))?;
    fs::create_dir_all(dev.join("mqueue"))?;
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("core", "/proc/kcore"),
    ] {
        std::os::unix::fs::symlink(target, dev.join(link))?;
    }
    Ok(())
}

fn bind_mount(rootfs: &Path, host: &Path, container_path: &str, read_only: bool) -> io::Result<()> {
    let target = secure_join(rootfs, container_path)?;
    let meta = fs::metadata(host)
        .map_err(|e| io::Error::new(e.kind(), format!("mount source {}: {e}", host.display())))?;
    if meta.is_dir() {
        fs::create_dir_all(&target)?;
    } else {
        if let Some(p) = target.parent() {
            fs::create_dir_all(p)?;
        }
        if fs::symlink_metadata(&target).is_err() {
            File::create(&target)?;
        }
    }
    mount(
        Some(host),
        &target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| io::Error::other(format!("bind {} to {container_path}: {e}", host.display())))?;
    if read_only {
        mount(
            None::<&str>,
            &target,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .map_err(|e| io::Error::other(format!("read-only {container_path}: {e}")))?;
    }
    Ok(())
}

/// `root` + `path`, resolving symlinks inside the container root (an absolute link target is
/// relative to `root`), so no image symlink can point a mount outside the root.
pub(crate) fn secure_join(root: &Path, path: &str) -> io::Result<PathBuf> {
    let mut resolved = PathBuf::new();
    let mut pending: Vec<String> = components(path);
    pending.reverse();
    let mut links = 0;
    while let Some(part) = pending.pop() {
        if part == ".." {
            resolved.pop();
            continue;
        }
        let candidate = root.join(&resolved).join(&part);
        match fs::symlink_metadata(&candidate) {
            Ok(m) if m.file_type().is_symlink() => {
                links += 1;
                if links > 40 {
                    return Err(io::Error::other(format!("too many symlinks in {path}")));
                }
                let target = fs::read_link(&candidate)?;
                let target = target.to_string_lossy().into_owned();
                if target.starts_with('/') {
                    resolved = PathBuf::new();
                }
                let mut more = components(&target);
                more.reverse();
                pending.extend(more);
            }
            _ => resolved.push(&part),
        }
    }
    Ok(root.join(resolved))
}

fn components(path: &str) -> Vec<String> {
    Path::new(path)
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_string_lossy().into_owned()),
            Component::ParentDir => Some("..".to_string()),
            _ => None,
        })
        .collect()
}

/// Recursive copy keeping modes, owners and symlinks (the no-overlay fallback).
fn copy_tree(src: &Path, dst: &Path) -> io::Result<()> {
    let meta = fs::symlink_metadata(src)?;
    let ft = meta.file_type();
    use std::os::unix::fs::MetadataExt;
    if ft.is_symlink() {
        std::os::unix::fs::symlink(fs::read_link(src)?, dst)?;
    } else if ft.is_dir() {
        fs::create_dir_all(dst)?;
        for e in fs::read_dir(src)? {
            let e = e?;
            copy_tree(&e.path(), &dst.join(e.file_name()))?;
        }
        fs::set_permissions(dst, meta.permissions())?;
    } else if ft.is_file() {
        fs::copy(src, dst)?;
        fs::set_permissions(dst, meta.permissions())?;
    } else {
        return Ok(());
    }
    let _ = std::os::unix::fs::lchown(dst, Some(meta.uid()), Some(meta.gid()));
    Ok(())
}

// ---------------------------------------------------------------- exec

/// Options of the `exec` role: `--tty` gives the command a terminal allocated inside the
/// container (from its own devpts, so `tty` and job control work there) and relays it over
/// this process's stdin/stdout; `--winsize FIFO` carries terminal size changes (4 bytes each:
/// columns and rows, big-endian u16).
struct ExecOpts<'a> {
    tty: bool,
    winsize: Option<&'a str>,
}

fn exec_opts(rest: &[String]) -> ExecOpts<'_> {
    let head: Vec<&String> = rest.iter().take_while(|a| *a != "--").collect();
    ExecOpts {
        tty: head.iter().any(|a| *a == "--tty"),
        winsize: head
            .iter()
            .position(|a| *a == "--winsize")
            .and_then(|i| head.get(i + 1))
            .map(|s| s.as_str()),
    }
}

fn exec(cdir: &Path, cmd: &[String], opts: ExecOpts<'_>) -> io::Result<u8> {
    let winsize = match opts.winsize {
        Some(p) => Some(
            OpenOptions::new()
                .read(true)
                .custom_flags(nix::libc::O_NONBLOCK)
                .open(p)?,
        ),
        None => None,
    };
    let rec: ContainerRecord = read_json(&cdir.join("container.json"))?;
    let (prog, args) = cmd
        .split_first()
        .ok_or_else(|| io::Error::other("exec: no command"))?;
    let envs: Vec<(&str, &str)> = rec.env.iter().filter_map(|e| e.split_once('=')).collect();
    let mut command;
    if rec.isolated {
        let started: ProcState = read_json(&cdir.join("started.json"))?;
        if !started.alive() {
            return Err(io::Error::other("container is not running"));
        }
        if let Some(rel) = &rec.cgroup {
            Cgroups::detect().enter_self(rel)?;
        }
        // Open every namespace before entering any (the mount namespace changes /proc).
        let pid = started.pid;
        let mut nss = Vec::new();
        for (ns, flag) in [
            ("ipc", CloneFlags::CLONE_NEWIPC),
            ("uts", CloneFlags::CLONE_NEWUTS),
            ("net", CloneFlags::CLONE_NEWNET),
            ("pid", CloneFlags::CLONE_NEWPID),
            ("mnt", CloneFlags::CLONE_NEWNS),
        ] {
            nss.push((File::open(format!("/proc/{pid}/ns/{ns}"))?, flag));
        }
        for (f, flag) in &nss {
            setns(f.as_fd(), *flag).map_err(nix_err("setns"))?;
        }
        let wd = if rec.working_dir.is_empty() {
            "/"
        } else {
            rec.working_dir.as_str()
        };
        if nix::unistd::chdir(wd).is_err() {
            nix::unistd::chdir("/").map_err(nix_err("chdir"))?;
        }
        command = Command::new(prog);
        command.uid(rec.uid).gid(rec.gid);
    } else {
        let path = envs
            .iter()
            .find(|(k, _)| *k == "PATH")
            .map(|(_, v)| *v)
            .unwrap_or("/usr/bin:/bin");
        let resolved =
            plain_lookup(&rec.image_rootfs, prog, path).unwrap_or_else(|| PathBuf::from(prog));
        command = Command::new(resolved);
        command.arg0(prog).current_dir(cdir.join("work"));
    }
    command.args(args).env_clear().envs(envs);
    restore_transparent_huge_pages();
    let result = if opts.tty {
        exec_with_tty(command, winsize)
    } else {
        command.status()
    };
    match result {
        Ok(status) => Ok(exit_code_of(status).clamp(0, 255) as u8),
        // The shell's conventions: 127 not found, 126 found but not runnable.
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            exec_error(
                opts.tty,
                &format!("exec: \"{prog}\": executable file not found in $PATH"),
            );
            Ok(127)
        }
        Err(e) => {
            exec_error(opts.tty, &format!("exec \"{prog}\": {e}"));
            Ok(126)
        }
    }
}

/// With a TTY there is no stderr stream: errors go where the user looks, the terminal output.
#[allow(clippy::print_stdout)]
fn exec_error(tty: bool, msg: &str) {
    if tty {
        println!("{msg}\r");
    } else {
        report(msg);
    }
}

/// Runs `command` on a pty from the current (container) `/dev/ptmx`, as the leader of a new
/// session with that pty as controlling terminal, and relays stdin → pty → stdout until the
/// command exits. Single-threaded on purpose: after joining a pid namespace this process may
/// not create threads.
fn exec_with_tty(
    mut command: Command,
    mut winsize: Option<File>,
) -> io::Result<std::process::ExitStatus> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut master =
        nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY).map_err(nix_err("posix_openpt"))?;
    nix::pty::grantpt(&master).map_err(nix_err("grantpt"))?;
    nix::pty::unlockpt(&master).map_err(nix_err("unlockpt"))?;
    let slave_path = nix::pty::ptsname_r(&master).map_err(nix_err("ptsname"))?;
    let slave = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&slave_path)?;
    apply_winsize(&master, winsize.as_mut());
    nix::unistd::setsid().map_err(nix_err("setsid"))?;
    rustix::process::ioctl_tiocsctty(slave.as_fd())
        .map_err(|e| io::Error::other(format!("TIOCSCTTY: {e}")))?;
    let mut child = command
        .stdin(Stdio::from(slave.try_clone()?))
        .stdout(Stdio::from(slave.try_clone()?))
        .stderr(Stdio::from(slave))
        .spawn()?;

    let mut stdin = Some(io::stdin());
    let mut stdout = io::stdout();
    let mut buf = vec![0u8; 32 * 1024];
    let mut exited = None;
    loop {
        let (in_ready, master_ready, size_ready) = {
            let stdin_fd = stdin.as_ref().map(|s| s.as_fd());
            let mut fds = vec![PollFd::new(master.as_fd(), PollFlags::POLLIN)];
            if let Some(fd) = stdin_fd {
                fds.push(PollFd::new(fd, PollFlags::POLLIN));
            }
            if let Some(w) = &winsize {
                fds.push(PollFd::new(w.as_fd(), PollFlags::POLLIN));
            }
            match poll(&mut fds, PollTimeout::from(100u16)) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(io::Error::from(e)),
            }
            let ready = |f: &PollFd<'_>| f.revents().is_some_and(|r| !r.is_empty());
            let mut it = fds.iter();
            let m = it.next().is_some_and(ready);
            let i = stdin.is_some() && it.next().is_some_and(ready);
            let w = winsize.is_some() && it.next().is_some_and(ready);
            (i, m, w)
        };
        let mut got_output = false;
        if master_ready {
            match master.read(&mut buf) {
                Ok(0) | Err(_) => {
                    // EIO: the last slave closed, the command and its children are done.
                    break;
                }
                Ok(n) => {
                    got_output = true;
                    stdout.write_all(&buf[..n])?;
                    stdout.flush()?;
                }
            }
        }
        if in_ready && let Some(s) = stdin.as_mut() {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => stdin = None,
                Ok(n) => master.write_all(&buf[..n])?,
            }
        }
        if size_ready {
            apply_winsize(&master, winsize.as_mut());
        }
        if exited.is_none() {
            exited = child.try_wait()?;
        } else if !got_output {
            break;
        }
    }
    let status = match exited {
        Some(s) => s,
        None => child.wait()?,
    };
    // Closing the master hangs the terminal up, which SIGHUPs its controlling process: us.
    // The command's status is what this process must report, so ignore that.
    let mut hup = SigSet::empty();
    hup.add(Signal::SIGHUP);
    let _ = hup.thread_block();
    drop(master);
    Ok(status)
}

/// Applies the latest size waiting in the FIFO, if any.
fn apply_winsize(master: &nix::pty::PtyMaster, fifo: Option<&mut File>) {
    let Some(fifo) = fifo else { return };
    let mut last = None;
    let mut rec = [0u8; 4];
    while let Ok(4) = fifo.read(&mut rec) {
        last = Some(rec);
    }
    if let Some(r) = last {
        let size = rustix::termios::Winsize {
            ws_col: u16::from_be_bytes([r[0], r[1]]),
            ws_row: u16::from_be_bytes([r[2], r[3]]),
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let _ = rustix::termios::tcsetwinsize(master.as_fd(), size);
    }
}
