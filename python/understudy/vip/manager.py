"""The VIP manager: takes over a desired set of addresses and gives them up."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Callable, Iterable
from pathlib import Path

from understudy._core import Announcer, Netif, NetifError
from understudy.vip.model import AnnounceSettings, Vip, VipError, VipEvent

log = logging.getLogger(__name__)

#: How many past events `history` keeps.
HISTORY = 256


def _forwarding(interface: str) -> bool:
    """Whether the interface forwards IPv6 (then our advertisements carry the Router flag)."""
    try:
        return Path(f"/proc/sys/net/ipv6/conf/{interface}/forwarding").read_text().strip() == "1"
    except OSError:
        return False


class VipManager:
    """Holds or releases a set of VIPs in this network namespace.

    `acquire()` adds every address (already present counts as done), then
    announces them `settings.repeat` times `settings.interval` apart, then
    every `settings.refresh` seconds while held. `release()` deletes them
    (already absent counts as done). `stop()` releases everything. Each step
    is reported to `on_event` and kept in `history`.
    """

    def __init__(
        self,
        vips: Iterable[Vip] = (),
        *,
        settings: AnnounceSettings | None = None,
        on_event: Callable[[VipEvent], None] | None = None,
    ) -> None:
        self.settings = settings or AnnounceSettings()
        self.on_event = on_event
        self.history: collections.deque[VipEvent] = collections.deque(maxlen=HISTORY)
        self._vips: tuple[Vip, ...] = tuple(sorted(set(vips)))
        self._netif: Netif | None = None
        self._held = False
        self._announcing: asyncio.Task[None] | None = None
        # Kept for the manager's life: opening a packet socket costs about a
        # millisecond and closing one waits for an RCU grace period (~10 ms).
        self._announcers: dict[str, Announcer] = {}
        self._lock = asyncio.Lock()

    @property
    def vips(self) -> tuple[Vip, ...]:
        """The desired set."""
        return self._vips

    @property
    def held(self) -> bool:
        """Whether the VIPs are ours (between acquire and release)."""
        return self._held

    async def start(self) -> None:
        """Open the rtnetlink connection and the announcers' sockets (idempotent),
        so that a takeover's first announcement costs no socket set-up."""
        if self._netif is None:
            self._netif = Netif()
            for interface in sorted({vip.interface for vip in self._vips}):
                with contextlib.suppress(NetifError):  # may appear later; acquire() reports it
                    self._announcers[interface] = Announcer(interface)

    async def stop(self) -> None:
        """Release everything held and close (idempotent)."""
        if self._netif is None:
            return
        try:
            if self._held:
                await self.release()
            await self._stop_announcing()
        finally:
            self._netif = None
            self._announcers.clear()

    async def acquire(self) -> None:
        """Take the VIPs: add them, then announce. Raises VipError naming every
        VIP that could not be added (the others are held and announced)."""
        async with self._lock:
            netif = self._require()
            self._held = True
            failures = self._add(netif, self._vips)
            self._check_announcers(netif)
            self._restart_announcing(failures)
        if failures:
            raise VipError(failures)

    async def announce(self) -> None:
        """Announce the held VIPs again, a whole burst (after a dual-primary heal,
        the loser's announcements may have pointed neighbours at it)."""
        async with self._lock:
            if self._held:
                self._restart_announcing([])

    async def release(self) -> None:
        """Give the VIPs up: stop announcing, delete them."""
        async with self._lock:
            netif = self._require()
            await self._stop_announcing()
            was_held, self._held = self._held, False
            failures = self._delete(netif, self._vips)
        if failures and was_held:
            raise VipError(failures)

    async def set_vips(self, vips: Iterable[Vip]) -> None:
        """Change the desired set; while held, add the new ones (and announce
        them) and delete the ones dropped."""
        new = tuple(sorted(set(vips)))
        async with self._lock:
            old, self._vips = self._vips, new
            if not self._held:
                return
            netif = self._require()
            failures = self._delete(netif, [v for v in old if v not in new])
            failures += self._add(netif, [v for v in new if v not in old])
            self._check_announcers(netif)
            self._restart_announcing(failures)
        if failures:
            raise VipError(failures)

    # --- internals -------------------------------------------------------------

    def _require(self) -> Netif:
        if self._netif is None:
            raise RuntimeError("VipManager is not started")
        return self._netif

    def _emit(self, event: VipEvent) -> None:
        self.history.append(event)
        log.debug("vip %s %s %s", event.kind, event.vip or "", event.detail)
        if self.on_event is not None:
            self.on_event(event)

    def _add(self, netif: Netif, vips: Iterable[Vip]) -> list[tuple[Vip, NetifError]]:
        failures = []
        for vip in vips:
            try:
                added = netif.add_address(vip.interface, vip.address, vip.prefix_len, vip.label)
            except NetifError as err:
                failures.append((vip, err))
                self._emit(VipEvent("error", vip, str(err.strerror or err)))
                continue
            self._emit(VipEvent("added" if added else "present", vip))
        return failures

    def _delete(self, netif: Netif, vips: Iterable[Vip]) -> list[tuple[Vip, NetifError]]:
        failures = []
        for vip in vips:
            try:
                removed = netif.del_address(vip.interface, vip.address, vip.prefix_len)
            except NetifError as err:
                if err.errno == 19:  # ENODEV: the interface went, and its addresses with it
                    self._emit(VipEvent("absent", vip, "no such interface"))
                    continue
                failures.append((vip, err))
                self._emit(VipEvent("error", vip, str(err.strerror or err)))
                continue
            self._emit(VipEvent("removed" if removed else "absent", vip))
        return failures

    def _check_announcers(self, netif: Netif) -> None:
        """Drop a cached announcer whose interface was re-created or changed MAC."""
        for interface, ann in list(self._announcers.items()):
            try:
                link = netif.link(interface)
            except NetifError:
                link = {}
            if (link.get("index"), link.get("mac")) != (ann.index, ann.mac):
                del self._announcers[interface]

    def _restart_announcing(self, failures: list[tuple[Vip, NetifError]]) -> None:
        """Announce the VIPs that were added once now (the first frame leaves
        before acquire() returns), then the rest of the burst and the refreshes in a task."""
        if self._announcing is not None:
            self._announcing.cancel()
        failed = {vip for vip, _ in failures}
        vips = tuple(v for v in self._vips if v not in failed)
        sent = 0
        if self.settings.repeat > 0:
            self._announce_round(vips, "round 1")
            sent = 1
        self._announcing = asyncio.get_running_loop().create_task(self._announce_loop(vips, sent))

    async def _stop_announcing(self) -> None:
        task, self._announcing = self._announcing, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _announce_loop(self, vips: tuple[Vip, ...], rounds: int) -> None:
        s = self.settings
        while True:
            if rounds < s.repeat:
                await asyncio.sleep(s.interval)
            elif s.refresh > 0:
                await asyncio.sleep(s.refresh)
            else:
                return
            rounds += 1
            self._announce_round(vips, f"round {rounds}")

    def _announce_round(self, vips: Iterable[Vip], detail: str) -> None:
        s, announcers = self.settings, self._announcers
        frames = 0
        for vip in vips:
            try:
                ann = announcers.get(vip.interface)
                if ann is None:
                    ann = announcers[vip.interface] = Announcer(vip.interface)
                if vip.version == 4:
                    ann.announce(vip.address)
                    frames += 1
                    if s.arp_reply:
                        ann.announce(vip.address, reply=True)
                        frames += 1
                else:
                    router = _forwarding(vip.interface) if s.router is None else s.router
                    ann.announce(vip.address, router=router)
                    frames += 1
            except NetifError as err:
                # An interface that went away or down: the next round tries again.
                announcers.pop(vip.interface, None)
                self._emit(VipEvent("error", vip, f"announce: {err.strerror or err}"))
        if frames:
            self._emit(VipEvent("announced", None, detail, frames))
