"""pytest plugin: run tests marked `@pytest.mark.uml` inside a User-Mode-Linux guest.

On the host, each selected uml test is replaced by a stand-in item with the same
node id. The first stand-in of a test module to run boots ONE guest
(`understudy.uml.run`) that runs all of that module's selected uml tests with
`python -m pytest <node ids>`; inside, this same plugin (seeing
UNDERSTUDY_IN_GUEST=1) lets them run normally and appends each phase's report to a
JSON-lines file on the shared filesystem. Every stand-in then replays its own test's
outcome: pass, fail (the guest's traceback and captured output, plus the guest
kernel log up to the end of that test), skip or xfail as inside. A guest that cannot
boot fails every uml test with the reason; nothing is skipped silently.

Inside the guest the `netns` fixture gives a factory of network namespaces.
See docs/testing-in-uml.md.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from _pytest.mark.structures import Mark
from _pytest.nodes import Node

from understudy.uml import GUEST_ENV, GuestResult, NetnsFactory, UmlUnavailable, in_guest, run

#: Inside the guest: where this plugin appends one JSON line per test report.
REPORT_ENV = "UNDERSTUDY_UML_REPORT"
#: Written to the guest kernel log around each test, to cut the log per test.
KMSG_TAG = "understudy-test:"
KERNEL_LOG_LINES = 40
# Markers the host must not evaluate: they are evaluated inside, where they belong.
_GUEST_ONLY_MARKS = frozenset({"skip", "skipif", "xfail", "usefixtures"})


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("uml", "tests in a User-Mode-Linux guest (@pytest.mark.uml)")
    group.addoption(
        "--uml-timeout",
        type=float,
        default=float(os.environ.get("UNDERSTUDY_UML_TIMEOUT", "600")),
        help="seconds one test module's guest may spend on its tests, boot not included (default 600)",
    )
    group.addoption("--uml-mem", default="512M", help="guest RAM (default 512M)")
    group.addoption(
        "--uml-keep",
        action="store_true",
        default=os.environ.get("UNDERSTUDY_UML_KEEP", "") not in ("", "0"),
        help="keep each guest's run directory (init script, dmesg, report, tmp_path) and print it",
    )


def pytest_configure(config: pytest.Config) -> None:
    if in_guest():
        report = os.environ.get(REPORT_ENV)
        if report:
            config.pluginmanager.register(GuestReporter(Path(report)), "understudy-uml-guest")
    else:
        config.pluginmanager.register(HostRunner(config), "understudy-uml-host")


@pytest.fixture
def netns() -> Iterator[NetnsFactory]:
    """Factory of network namespaces (`lo` up) and veth links; all removed after the test.

    Only inside a guest: on the host it fails, since it would change the host's network.
    """
    if not in_guest():
        pytest.fail("the netns fixture works only inside a UML guest: mark the test @pytest.mark.uml", pytrace=False)
    factory = NetnsFactory()
    yield factory
    factory.cleanup()


# ---------------------------------------------------------------- inside the guest


class GuestReporter:
    """Appends every test report to the JSON-lines file the host reads after the run."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._kmsg_on = self._enable_kmsg()

    @staticmethod
    def _enable_kmsg() -> bool:
        try:
            Path("/proc/sys/kernel/printk_devkmsg").write_text("on\n")
        except OSError:
            pass
        return os.access("/dev/kmsg", os.W_OK)

    def _kmsg(self, text: str) -> None:
        if self._kmsg_on:
            try:
                with open("/dev/kmsg", "w") as kmsg:
                    kmsg.write(f"{KMSG_TAG} {text}\n")
            except OSError:
                pass

    def _append(self, record: dict[str, Any]) -> None:
        # fsync per record: a guest killed on timeout still leaves the finished tests.
        with open(self.path, "a") as out:
            out.write(json.dumps(record) + "\n")
            out.flush()
            os.fsync(out.fileno())

    def pytest_runtest_logstart(self, nodeid: str) -> None:
        self._kmsg(f"start {nodeid}")

    def pytest_runtest_logfinish(self, nodeid: str) -> None:
        self._kmsg(f"end {nodeid}")

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        record: dict[str, Any] = {
            "kind": "test",
            "nodeid": report.nodeid,
            "when": report.when,
            "outcome": report.outcome,
            "longrepr": report.longreprtext,
            "sections": [list(s) for s in report.sections],
            "duration": report.duration,
            "wasxfail": getattr(report, "wasxfail", None),
            "skip": None,
            "crash": getattr(getattr(report.longrepr, "reprcrash", None), "message", None),
        }
        if report.skipped and isinstance(report.longrepr, tuple):
            path, lineno, reason = report.longrepr
            record["skip"] = [str(path), lineno, str(reason)]
        self._append(record)

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            self._append({"kind": "collect", "nodeid": report.nodeid, "longrepr": report.longreprtext})


# ---------------------------------------------------------------- on the host


@dataclass
class GuestRun:
    """One guest that ran one test module's uml tests."""

    module: str
    nodeids: list[str]
    phases: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    collect_errors: list[str] = field(default_factory=list)
    result: GuestResult | None = None
    error: UmlUnavailable | None = None
    seconds: float = 0.0
    kept: Path | None = None

    def kernel_log_until(self, nodeid: str) -> str:
        """The guest kernel log up to the end of `nodeid`, last KERNEL_LOG_LINES lines."""
        if self.result is None:
            return ""
        lines = self.result.dmesg.splitlines()
        end_mark = f"{KMSG_TAG} end {nodeid}"
        upto = "the end of the log"
        for i, line in enumerate(lines):
            if line.endswith(end_mark):
                lines, upto = lines[: i + 1], "this test's end"
                break
        shown = lines[-KERNEL_LOG_LINES:]
        header = f"--- guest kernel log, last {len(shown)} of {len(lines)} lines up to {upto} ---"
        return header + "\n" + "\n".join(shown)

    def no_result(self, nodeid: str) -> str:
        """Why a test has no report from inside, with what the guest printed."""
        result = self.result
        assert result is not None
        if self.collect_errors:
            head = "collection failed inside the guest:\n" + "\n".join(self.collect_errors)
        elif result.timed_out:
            started = f"{KMSG_TAG} start {nodeid}" in result.dmesg
            head = (
                f"the guest was killed after {result.command_seconds:.0f} s of tests (--uml-timeout) "
                + ("while this test ran" if started else "before this test started")
            )
        else:
            head = f"no result from the guest for this test (pytest in the guest exited {result.returncode})"
        return (
            f"{head}\n--- pytest in the guest, stdout (tail) ---\n{_tail(result.stdout, 40)}\n"
            f"--- stderr (tail) ---\n{_tail(result.stderr, 20)}\n{self.kernel_log_until(nodeid)}"
        )


def _tail(text: str, lines: int) -> str:
    return "\n".join(text.splitlines()[-lines:])


class UmlItem(pytest.Item):
    """Host-side stand-in for a uml test: replays the outcome the guest reported."""

    def __init__(self, *, original: pytest.Item, runner: HostRunner, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.original = original
        self.runner = runner
        self.own_markers = [m for m in original.own_markers if m.name not in _GUEST_ONLY_MARKS]
        self.keywords.update(original.keywords)
        self.extra_keyword_matches.update(original.extra_keyword_matches)
        self.user_properties = original.user_properties
        self.inner_skip: list[Any] | None = None

    def iter_markers_with_node(self, name: str | None = None) -> Iterator[tuple[Node, Mark]]:
        # Module- and class-level skipif/xfail marks would otherwise be evaluated here.
        for node, mark in super().iter_markers_with_node(name):
            if mark.name not in _GUEST_ONLY_MARKS:
                yield node, mark

    def reportinfo(self) -> tuple[os.PathLike[str] | str, int | None, str]:
        return self.original.reportinfo()

    def runtest(self) -> None:
        group = self.runner.guest_run_for(self)
        if group.error is not None:
            pytest.fail(f"{group.error}\n(guest for {group.module})", pytrace=False)
        phases = group.phases.get(self.nodeid, {})
        for when in ("setup", "call"):
            rec = phases.get(when)
            if rec is None:
                pytest.fail(group.no_result(self.nodeid), pytrace=False)
            self._add_sections(rec)
            if rec["outcome"] == "failed":
                label = "error in setup" if when == "setup" else "failed"
                crash = (rec["crash"] or rec["longrepr"]).split("\n", 1)[0]
                log = group.kernel_log_until(self.nodeid)
                pytest.fail(f"{label} inside the guest: {crash}\n{rec['longrepr']}\n\n{log}", pytrace=False)
            if rec["outcome"] == "skipped":
                if rec["wasxfail"] is not None:
                    pytest.xfail(rec["wasxfail"])
                self.inner_skip = rec["skip"]
                pytest.skip(rec["skip"][2] if rec["skip"] else "skipped inside the guest")

    def teardown(self) -> None:
        group = self.runner.groups.get(str(self.path))
        if group is None or group.error is not None:
            return
        rec = group.phases.get(self.nodeid, {}).get("teardown")
        if rec is not None and rec["outcome"] == "failed":
            self._add_sections(rec)
            pytest.fail(f"error in teardown inside the guest:\n{rec['longrepr']}", pytrace=False)

    def _add_sections(self, rec: dict[str, Any]) -> None:
        # Each phase's report repeats the sections of the phases before it.
        for title, content in rec["sections"]:
            match = re.fullmatch(r"Captured (\S+) (setup|call|teardown)", title)
            if match:
                section = (match.group(2), f"{match.group(1)} (guest)", content)
            else:
                section = (rec["when"], f"{title} (guest)", content)
            if section not in self._report_sections:
                self._report_sections.append(section)


class HostRunner:
    """Replaces uml tests with stand-ins and boots one guest per test module."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.groups: dict[str, GuestRun] = {}

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, session: pytest.Session, items: list[pytest.Item]) -> None:
        # trylast: -k, -m and --deselect have already chosen the items.
        for i, item in enumerate(items):
            if item.get_closest_marker("uml") is not None and not isinstance(item, UmlItem):
                assert item.parent is not None
                items[i] = UmlItem.from_parent(
                    item.parent, name=item.name, nodeid=item.nodeid, original=item, runner=self
                )

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[
        None, pytest.TestReport, pytest.TestReport
    ]:
        report = yield
        # A skip inside the guest is reported at the test's location, not this plugin's.
        if isinstance(item, UmlItem) and report.skipped and item.inner_skip and isinstance(report.longrepr, tuple):
            path, lineno, reason = item.inner_skip
            report.longrepr = (path, lineno, reason)
        return report

    def guest_run_for(self, item: UmlItem) -> GuestRun:
        key = str(item.path)
        if key not in self.groups:
            nodeids = [i.nodeid for i in item.session.items if isinstance(i, UmlItem) and str(i.path) == key]
            self.groups[key] = self._run_guest(key, nodeids)
        return self.groups[key]

    def _run_guest(self, module: str, nodeids: list[str]) -> GuestRun:
        config = self.config
        group = GuestRun(module=os.path.relpath(module, config.rootpath), nodeids=nodeids)
        keep: bool = config.getoption("uml_keep")
        stream = config.getoption("capture") == "no"
        rundir = Path(tempfile.mkdtemp(prefix="understudy-uml-pytest-"))
        report = rundir / "report.jsonl"
        args = [
            sys.executable, "-m", "pytest",
            "-p", __name__,
            "-p", "no:cacheprovider",
            "--rootdir", str(config.rootpath),
            "--basetemp", str(rundir / "basetemp"),
            "--color=no", "-v",
            f"--tb={config.getoption('tbstyle')}",
        ]  # fmt: skip
        if config.inipath is not None:
            args += ["-c", str(config.inipath)]
        if config.getoption("showlocals"):
            args.append("-l")
        if stream:
            args.append("-s")
        env = dict(os.environ)
        env[REPORT_ENV] = str(report)
        env[GUEST_ENV] = "1"
        plugin_dir = str(Path(__file__).resolve().parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (plugin_dir, env.get("PYTHONPATH", "")) if p)
        start = time.monotonic()
        try:
            if stream:
                sys.stdout.write(f"\n[uml] booting a guest for {group.module} ({len(nodeids)} tests)\n")
            group.result = run(
                [*args, *nodeids],
                cwd=config.rootpath,
                env=env,
                timeout=config.getoption("uml_timeout"),
                mem=config.getoption("uml_mem"),
                echo=stream,
                keep=keep,
            )
        except UmlUnavailable as exc:
            group.error = exc
        group.seconds = time.monotonic() - start
        if report.exists():
            for line in report.read_text().splitlines():
                rec = json.loads(line)
                if rec["kind"] == "collect":
                    group.collect_errors.append(rec["longrepr"])
                else:
                    group.phases.setdefault(rec["nodeid"], {})[rec["when"]] = rec
        if keep:
            group.kept = rundir
        else:
            shutil.rmtree(rundir, ignore_errors=True)
        return group

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.groups:
            return
        tr = terminalreporter
        tr.write_sep("-", "uml guests")
        for group in self.groups.values():
            if group.error is not None or group.result is None:
                reason = "; ".join(group.error.reasons) if group.error else "?"
                tr.write_line(f"{group.module}: guest unavailable after {group.seconds:.1f} s: {reason}")
                continue
            r = group.result
            status = "timed out" if r.timed_out else f"pytest exit {r.returncode}"
            tr.write_line(
                f"{group.module}: {len(group.nodeids)} tests, boot {r.boot_seconds:.1f} s, "
                f"tests {r.command_seconds:.1f} s, total {r.total_seconds:.1f} s ({status})"
            )
            if group.kept is not None:
                tr.write_line(f"  kept: {group.kept} (report, basetemp) and {r.workdir} (init.sh, dmesg)")
