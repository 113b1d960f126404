"""Boot one User-Mode-Linux guest on the host's filesystem and run one command in it.

The guest is Debian's `linux.uml` (a real Linux kernel run as an ordinary process)
with the host's `/` as its root (hostfs), so the host's programs, the checkout and
its virtualenv run inside unchanged. PID 1 is a generated shell script that mounts
what the kernel does not, loads the IPVS modules, brings `lo` up, runs the command
and powers the guest off. See docs/testing-in-uml.md and
/work/shared/reference/user-mode-linux.md for the traps this module works around.
"""

from __future__ import annotations

import codecs
import functools
import os
import re
import secrets
import selectors
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

__all__ = [
    "DEFAULT_MODULES",
    "GUEST_ENV",
    "GuestResult",
    "KernelInfo",
    "UmlError",
    "UmlUnavailable",
    "find_kernel",
    "run",
]

#: Modules loaded before the command runs: IPVS, the schedulers the project uses, veth.
DEFAULT_MODULES: tuple[str, ...] = (
    "ip_vs",
    "ip_vs_rr",
    "ip_vs_wrr",
    "ip_vs_wlc",
    "ip_vs_sh",
    "ip_vs_mh",
    "veth",
)

#: Set to "1" in the environment of every command run inside a guest.
GUEST_ENV = "UNDERSTUDY_IN_GUEST"

# The guest's PID 1 has no environment of its own: the system tools are found here.
_SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
# Inside the guest, a private tmpfs holding the module tree view and the modprobe wrapper.
_GUEST_RUN = "/run/understudy"
# (tool, Debian package) the init script needs from the host.
_TOOLS = (
    ("sh", "dash"),
    ("modprobe", "kmod"),
    ("ip", "iproute2"),
    ("mount", "mount"),
    ("dmesg", "util-linux"),
    ("setsid", "util-linux"),
    ("stty", "coreutils"),
    ("mkfifo", "coreutils"),
    ("env", "coreutils"),
    ("cat", "coreutils"),
)


class UmlError(RuntimeError):
    """Base class of this module's errors."""


class UmlUnavailable(UmlError):
    """The guest cannot boot or cannot get ready to run the command; `reasons` says why."""

    def __init__(self, reasons: Sequence[str], detail: str = "") -> None:
        self.reasons: tuple[str, ...] = tuple(reasons)
        self.detail = detail
        text = "UML guest unavailable: " + "; ".join(self.reasons)
        super().__init__(text + ("\n" + detail if detail else ""))


@dataclass(frozen=True)
class KernelInfo:
    """A usable UML kernel: its binary, its release and its module tree."""

    path: Path
    version: str
    modules_dir: Path
    modules: frozenset[str]


@dataclass(frozen=True)
class GuestResult:
    """What one guest run produced.

    `returncode` is the command's exit status inside the guest (None when the guest
    was killed before the command finished). `dmesg` is the guest kernel log dumped
    after the command; when the guest was killed it is what the console streamed.
    """

    argv: tuple[str, ...]
    returncode: int | None
    stdout: str
    stderr: str
    dmesg: str
    console: str
    timed_out: bool
    boot_seconds: float
    command_seconds: float
    total_seconds: float
    umid: str
    workdir: Path | None = None
    kernel: KernelInfo | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        """True when the command ran to completion with status 0."""
        return self.returncode == 0 and not self.timed_out

    def check(self) -> GuestResult:
        """Return self, or raise UmlError naming the status and the output tail."""
        if self.ok:
            return self
        what = f"timed out after {self.total_seconds:.1f} s" if self.timed_out else f"exited {self.returncode}"
        raise UmlError(
            f"{shlex.join(self.argv)} {what} in the UML guest\n"
            f"--- stdout (tail) ---\n{_tail(self.stdout, 30)}\n--- stderr (tail) ---\n{_tail(self.stderr, 30)}"
            f"\n--- kernel log (tail) ---\n{_tail(self.dmesg, 20)}"
        )


def _tail(text: str, lines: int) -> str:
    return "\n".join(text.splitlines()[-lines:])


@functools.lru_cache(maxsize=8)
def _kernel_version(path: str) -> str:
    out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    return out.stdout.strip()


def _module_names(modules_dir: Path) -> frozenset[str]:
    names: set[str] = set()
    for index in ("modules.dep", "modules.builtin"):
        try:
            text = (modules_dir / index).read_text()
        except OSError:
            continue
        for line in text.splitlines():
            path = line.split(":", 1)[0].strip()
            if path:
                names.add(Path(path).name.split(".ko", 1)[0].replace("-", "_"))
    return frozenset(names)


def find_kernel(kernel: str | os.PathLike[str] | None = None, modules: Sequence[str] = ()) -> KernelInfo:
    """Locate the UML kernel, its modules and the host tools the guest needs.

    The kernel is `kernel`, else $UNDERSTUDY_UML_KERNEL, else `linux.uml` on PATH;
    the module tree is $UNDERSTUDY_UML_MODULES, else /usr/lib/uml/modules/<release>.
    Raises UmlUnavailable listing everything that is missing.
    """
    problems: list[str] = []
    chosen = kernel or os.environ.get("UNDERSTUDY_UML_KERNEL") or shutil.which("linux.uml") or "/usr/bin/linux.uml"
    path = Path(chosen)
    version = ""
    if not (path.is_file() and os.access(path, os.X_OK)):
        problems.append(f"no UML kernel at {path} (Debian: apt-get install user-mode-linux)")
    else:
        try:
            version = _kernel_version(str(path))
        except (OSError, subprocess.SubprocessError) as exc:
            problems.append(f"{path} --version failed: {exc}")
        if version and not re.fullmatch(r"\d+\.\d+[\w.+-]*", version):
            problems.append(f"{path} --version printed {version!r}, not a kernel release")
            version = ""
    modules_dir = Path(os.environ.get("UNDERSTUDY_UML_MODULES") or f"/usr/lib/uml/modules/{version or '<release>'}")
    names: frozenset[str] = frozenset()
    if version or "UNDERSTUDY_UML_MODULES" in os.environ:
        if not modules_dir.is_dir():
            problems.append(f"no UML module tree at {modules_dir} (Debian: apt-get install user-mode-linux)")
        elif not (modules_dir / "modules.dep").is_file():
            problems.append(f"{modules_dir}/modules.dep is missing (run: depmod -b <root> {version})")
        else:
            names = _module_names(modules_dir)
            missing = [m for m in modules if m.replace("-", "_") not in names]
            if missing:
                problems.append(f"modules not in {modules_dir}: {', '.join(missing)}")
    for tool, package in _TOOLS:
        if shutil.which(tool, path=_SYSTEM_PATH) is None:
            problems.append(f"{tool} not found in {_SYSTEM_PATH} (Debian package {package})")
    if problems:
        raise UmlUnavailable(problems)
    return KernelInfo(path=path, version=version, modules_dir=modules_dir, modules=names)


def _mem_bytes(mem: str) -> int:
    match = re.fullmatch(r"(\d+)([kKmMgG]?)", mem)
    if match is None:
        raise ValueError(f"mem={mem!r}: expected a number with an optional K/M/G suffix")
    scale = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[match.group(2).lower()]
    return int(match.group(1)) * scale


# PID 1 of the guest. @@NAME@@ placeholders are filled with shell-quoted values.
_INIT = r"""#!/bin/sh
# PID 1 of one understudy.uml guest (generated by understudy/uml/_runner.py).
PATH=@@SYSTEM_PATH@@
export PATH
W=@@WORKDIR@@
R=@@GUEST_RUN@@
ctl() { echo "$*" > /dev/ttyS2; }
finish() {
    dmesg > "$W/dmesg" 2>/dev/null
    sync
    # The guest's exit status is not the process's: the host reads $W/status instead.
    poweroff -f 2>/dev/null || halt -f 2>/dev/null || echo o > /proc/sysrq-trigger
    sleep 10
}
fail() { ctl "error $*"; finish; }
mount -t proc proc /proc
mount -t sysfs sysfs /sys
[ -c /dev/ttyS2 ] || mount -t devtmpfs devtmpfs /dev
stty -F /dev/ttyS2 raw -echo 2>/dev/null
ctl "stage init"
# Let tests mark their boundaries in the kernel log without being rate-limited.
echo on > /proc/sys/kernel/printk_devkmsg 2>/dev/null
# A private /run: `ip netns add` must not touch the host's /run/netns.
mount -t tmpfs -o mode=0755 tmpfs /run || fail "mount tmpfs on /run"
mkdir -p /dev/shm /dev/pts || fail "mkdir /dev/shm /dev/pts"
mount -t tmpfs -o mode=1777 tmpfs /dev/shm || fail "mount tmpfs on /dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666 devpts /dev/pts || fail "mount devpts"
# /lib/modules belongs to the host (and may not exist there): the UML modules are
# bound read-only under $R and a modprobe wrapper points at them, both for the
# kernel's own module requests and, first on PATH, for the command.
M="$R/modroot/lib/modules/$(uname -r)"
mkdir -p "$M" "$R/bin" || fail "mkdir $M"
mount --bind @@MODULES_DIR@@ "$M" || fail "bind-mount @@MODULES_DIR@@"
mount -o remount,bind,ro "$M" 2>/dev/null
printf '#!/bin/sh\nexec %s -d %s "$@"\n' @@MODPROBE@@ "$R/modroot" > "$R/bin/modprobe"
chmod 755 "$R/bin/modprobe"
echo "$R/bin/modprobe" > /proc/sys/kernel/modprobe
for m in @@MODULES@@; do
    out=$("$R/bin/modprobe" "$m" 2>&1) || fail "modprobe $m: $out"
done
# IPv4 real servers are refused (EINVAL) in a namespace that never had an IPv4 address.
ip link set lo up || fail "ip link set lo up"
cd @@CWD@@ || fail "cd @@CWD@@"
@@COMMAND@@
rc=$?
echo "$rc" > "$W/status"
ctl "stage done $rc"
finish
"""

# Output through FIFOs read by `cat` into the raw serial lines: the command sees pipes,
# as it would on the host, and the host gets two separate streams.
_COMMAND_CAPTURED = r"""stty -F /dev/ttyS0 raw -echo && stty -F /dev/ttyS1 raw -echo || fail "stty ttyS0/ttyS1"
mkfifo "$R/stdout" "$R/stderr" || fail "mkfifo"
cat "$R/stdout" > /dev/ttyS0 &
c1=$!
cat "$R/stderr" > /dev/ttyS1 &
c2=$!
ctl "stage ready"
env -i @@ENV@@ @@ARGV@@ < /dev/null > "$R/stdout" 2> "$R/stderr"
rc=$?
wait $c1 $c2
(exit $rc)"""

_COMMAND_INTERACTIVE = r"""exec 3<>/dev/ttyS0
stty sane @@STTY@@ <&3
ctl "stage ready"
setsid -w -c env -i @@ENV@@ @@ARGV@@ <&3 >&3 2>&3 3>&-"""


def _fill(template: str, values: Mapping[str, str]) -> str:
    for key, value in values.items():
        template = template.replace(f"@@{key}@@", value)
    return template


def _guest_env(env: Mapping[str, str] | None) -> dict[str, str]:
    result = dict(os.environ if env is None else env)
    result[GUEST_ENV] = "1"
    wrapper_dir = f"{_GUEST_RUN}/bin"
    if "PATH" in result:
        result["PATH"] = f"{wrapper_dir}:{result['PATH']}"
    else:
        result["PATH"] = f"{wrapper_dir}:{_SYSTEM_PATH}"
    return result


def _rmtree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def run(
    command: Sequence[str],
    *,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float | None = 600.0,
    boot_timeout: float = 120.0,
    mem: str = "512M",
    modules: Sequence[str] = DEFAULT_MODULES,
    echo: bool = False,
    interactive: bool = False,
    keep: bool | None = None,
    kernel: str | os.PathLike[str] | None = None,
    tmpdir: str | os.PathLike[str] | None = None,
) -> GuestResult:
    """Boot one guest, run `command` as root in it, power it off and return the result.

    `cwd` defaults to the current directory and `env` to this process's environment
    (PATH gets the guest's modprobe wrapper first; UNDERSTUDY_IN_GUEST=1 is added).
    `timeout` bounds the command (None: no limit): the guest is then killed and the
    result has `timed_out` set. `boot_timeout` bounds the boot and setup before it.
    `echo` copies the command's output to this process's stdout/stderr as it arrives
    (it is captured either way). `interactive` connects the command to this terminal
    instead (for a shell in the guest; nothing is captured). `keep` (default:
    $UNDERSTUDY_UML_KEEP) keeps the run's directory (init script, status, dmesg) and
    reports it in `workdir`. The run's directory, and with it the guest's RAM file,
    is made in `tmpdir` (default: the system temp dir), which needs room for `mem`.

    Raises UmlUnavailable when the guest cannot boot or set itself up.
    """
    argv = tuple(command)
    if not argv:
        raise ValueError("empty command")
    info = find_kernel(kernel, modules)
    workdir_cwd = Path(cwd if cwd is not None else os.getcwd()).resolve()
    if not workdir_cwd.is_dir():
        raise FileNotFoundError(f"cwd {workdir_cwd} is not a directory")
    if keep is None:
        keep = os.environ.get("UNDERSTUDY_UML_KEEP", "") not in ("", "0")
    mem_bytes = _mem_bytes(mem)

    workdir = Path(tempfile.mkdtemp(prefix="understudy-uml-", dir=tmpdir))
    umid = f"understudy-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        if any(c.isspace() for c in str(workdir)):
            raise UmlUnavailable([f"{workdir} contains whitespace, which the kernel command line cannot carry"])
        free = shutil.disk_usage(workdir).free
        if free < mem_bytes:
            raise UmlUnavailable(
                [f"{workdir.parent} has {free >> 20} MiB free, the guest's RAM file needs mem={mem} (set TMPDIR)"]
            )
        limits = (boot_timeout, timeout)
        return _boot(argv, info, workdir, umid, workdir_cwd, env, limits, mem, modules, echo, interactive, keep)
    finally:
        # With uml_dir in the run's directory nothing lands in ~/.uml; an old-style
        # leftover is still removed in case a wrapper overrode it.
        _rmtree(Path.home() / ".uml" / umid)
        if not keep:
            _rmtree(workdir)


def _boot(
    argv: tuple[str, ...],
    info: KernelInfo,
    workdir: Path,
    umid: str,
    cwd: Path,
    env: Mapping[str, str] | None,
    limits: tuple[float, float | None],
    mem: str,
    modules: Sequence[str],
    echo: bool,
    interactive: bool,
    keep: bool,
) -> GuestResult:
    guest_env = _guest_env(env)
    env_words = " ".join(shlex.quote(f"{k}={v}") for k, v in guest_env.items() if k and "=" not in k)
    if interactive:
        size = shutil.get_terminal_size()
        stty = f"rows {size.lines} cols {size.columns}"
        command = _fill(_COMMAND_INTERACTIVE, {"STTY": stty, "ENV": env_words, "ARGV": shlex.join(argv)})
    else:
        command = _fill(_COMMAND_CAPTURED, {"ENV": env_words, "ARGV": shlex.join(argv)})
    modprobe = shutil.which("modprobe", path=_SYSTEM_PATH) or "modprobe"
    init = _fill(
        _INIT,
        {
            "SYSTEM_PATH": _SYSTEM_PATH,
            "WORKDIR": shlex.quote(str(workdir)),
            "GUEST_RUN": _GUEST_RUN,
            "MODULES_DIR": shlex.quote(str(info.modules_dir)),
            "MODPROBE": shlex.quote(modprobe),
            "MODULES": " ".join(shlex.quote(m) for m in modules),
            "CWD": shlex.quote(str(cwd)),
            "COMMAND": command,
        },
    )
    init_path = workdir / "init.sh"
    init_path.write_text(init)
    init_path.chmod(0o755)

    # UML cannot write a console to a regular file: every channel is a pipe, each with
    # its own null input.
    pipes: dict[str, tuple[int, int]] = {"console": os.pipe(), "ctl": os.pipe()}
    if not interactive:
        pipes["stdout"] = os.pipe()
        pipes["stderr"] = os.pipe()
    wfd = {name: w for name, (_, w) in pipes.items()}
    # Interactive: the command's serial line is this terminal (stdin and a copy of stdout).
    tty_out = os.dup(1) if interactive else -1
    args = [
        str(info.path),
        f"mem={mem}",
        f"umid={umid}",
        f"uml_dir={workdir / 'uml'}",
        "rootfstype=hostfs",
        "rootflags=/",
        "rw",
        f"init={init_path}",
        "con=null",
        f"con0=null,fd:{wfd['console']}",
        "ssl=null",
        f"ssl0=fd:0,fd:{tty_out}" if interactive else f"ssl0=null,fd:{wfd['stdout']}",
        "ssl1=null" if interactive else f"ssl1=null,fd:{wfd['stderr']}",
        f"ssl2=null,fd:{wfd['ctl']}",
    ]
    proc_env = dict(os.environ)
    proc_env["TMPDIR"] = str(workdir)  # the guest's RAM file; /dev/shm may be small

    saved_tty = _save_tty() if interactive else None
    start = time.monotonic()
    try:
        proc = subprocess.Popen(
            args,
            pass_fds=tuple(wfd.values()) + ((tty_out,) if interactive else ()),
            stdin=None if interactive else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=proc_env,
            start_new_session=not interactive,
        )
    except OSError as exc:
        for r, w in pipes.values():
            os.close(r)
            os.close(w)
        if interactive:
            os.close(tty_out)
        raise UmlUnavailable([f"cannot start {info.path}: {exc}"]) from exc
    for w in wfd.values():
        os.close(w)
    if interactive:
        os.close(tty_out)
    assert proc.stdout is not None
    readers = {name: r for name, (r, _) in pipes.items()}
    readers["process"] = proc.stdout.fileno()
    try:
        pump = _Pump(readers, echo=echo)
        timed_out = pump.run(proc, start, *limits)
    finally:
        if proc.poll() is None:
            _kill(proc)
        proc.wait()
        proc.stdout.close()
        for name, (r, _) in pipes.items():
            try:
                os.close(r)
            except OSError:
                pass
        if saved_tty is not None:
            _restore_tty(saved_tty)
    end = time.monotonic()

    text = pump.text
    console = text.get("process", "") + text.get("console", "")
    ctl = text.get("ctl", "").replace("\r", "")
    errors = [line.removeprefix("error ") for line in ctl.splitlines() if not line.startswith("stage ")]
    dmesg_path = workdir / "dmesg"
    dmesg = dmesg_path.read_text(errors="replace") if dmesg_path.exists() else console
    ready = pump.stages.get("ready")
    if ready is None:
        if timed_out:
            reason = f"the guest did not get ready within {limits[0]} s (boot_timeout)"
        elif errors:
            reason = "guest setup failed: " + " / ".join(errors)
        elif "init" not in pump.stages:
            reason = f"{info.path} exited {proc.returncode} before running its init"
        else:
            reason = f"the guest stopped during setup ({info.path} exited {proc.returncode})"
        detail = "--- guest console (tail) ---\n" + _tail(console, 40)
        if keep:
            detail += f"\n(run directory kept: {workdir})"
        raise UmlUnavailable([reason], detail)

    status_path = workdir / "status"
    returncode: int | None = None
    if status_path.exists():
        try:
            returncode = int(status_path.read_text().strip())
        except ValueError:
            returncode = None
    done = pump.stages.get("done", end)
    return GuestResult(
        argv=argv,
        returncode=returncode,
        stdout=text.get("stdout", ""),
        stderr=text.get("stderr", ""),
        dmesg=dmesg,
        console=console,
        timed_out=timed_out,
        boot_seconds=ready - start,
        command_seconds=done - ready,
        total_seconds=end - start,
        umid=umid,
        workdir=workdir if keep else None,
        kernel=info,
    )


def _kill(proc: subprocess.Popen[bytes]) -> None:
    # UML runs guest processes as host child processes: kill the whole group.
    try:
        if os.getpgid(proc.pid) == proc.pid:
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.kill()
    except ProcessLookupError:
        pass


class _Pump:
    """Reads every channel until all are closed, noting when init reports its stages."""

    def __init__(self, readers: Mapping[str, int], *, echo: bool) -> None:
        self.readers = dict(readers)
        self.echo = echo
        self.chunks: dict[str, list[str]] = {name: [] for name in readers}
        self.decoders = {name: codecs.getincrementaldecoder("utf-8")(errors="replace") for name in readers}
        self.stages: dict[str, float] = {}
        self._ctl_line = ""

    @property
    def text(self) -> dict[str, str]:
        return {name: "".join(parts) for name, parts in self.chunks.items()}

    def run(self, proc: subprocess.Popen[bytes], start: float, boot_timeout: float, timeout: float | None) -> bool:
        """Pump until every channel closes; kill the guest when the boot or the command
        overruns its limit. True if killed."""
        timed_out = False
        exited_at: float | None = None
        with selectors.DefaultSelector() as sel:
            for name, fd in self.readers.items():
                os.set_blocking(fd, False)
                sel.register(fd, selectors.EVENT_READ, name)
            while sel.get_map():
                now = time.monotonic()
                ready = self.stages.get("ready")
                if ready is None:
                    deadline: float | None = start + boot_timeout
                else:
                    deadline = None if timeout is None else ready + timeout
                if deadline is not None and now >= deadline and not timed_out:
                    timed_out = True
                    _kill(proc)
                if exited_at is None and proc.poll() is not None:
                    exited_at = now
                # A leftover process holding a pipe must not hang the host.
                if exited_at is not None and now - exited_at > 5.0:
                    break
                wait = 0.5 if deadline is None or timed_out else max(0.0, min(0.5, deadline - now))
                for key, _ in sel.select(wait):
                    name = str(key.data)
                    try:
                        data = os.read(key.fd, 65536)
                    except BlockingIOError:
                        continue
                    if not data:
                        sel.unregister(key.fd)
                        self._feed(name, b"", final=True)
                        continue
                    self._feed(name, data, final=False)
        return timed_out

    def _feed(self, name: str, data: bytes, *, final: bool) -> None:
        text = self.decoders[name].decode(data, final)
        if not text:
            return
        self.chunks[name].append(text)
        if name == "ctl":
            self._ctl_line += text.replace("\r", "")
            *lines, self._ctl_line = self._ctl_line.split("\n")
            for line in lines:
                if line.startswith("stage "):
                    stage = line.split()[1]
                    self.stages.setdefault(stage, time.monotonic())
        elif self.echo and name in ("stdout", "stderr"):
            stream: IO[str] = sys.stdout if name == "stdout" else sys.stderr
            stream.write(text)
            stream.flush()


def _save_tty() -> list[Any] | None:
    try:
        import termios

        if not os.isatty(0):
            return None
        return list(termios.tcgetattr(0))
    except (ImportError, OSError):
        return None


def _restore_tty(saved: list[Any]) -> None:
    try:
        import termios

        termios.tcsetattr(0, termios.TCSADRAIN, saved)
    except (ImportError, OSError):
        pass
