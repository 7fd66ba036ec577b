"""Balanced groups: which member of a group a call tries first, and the load figures that
decide it (calls in flight, recent time to first content).

A group is one position of a chain whose members are equivalent targets. Per call its
members are taken one at a time, best first by the chain's strategy; a member that fails
or is skipped hands the call to the next best member not yet tried. Each pick scans the
group once: O(group size), never a sort.

Strategies (`ChainConfig.strategy`):

- "least-busy" (default): fewest calls in flight per unit of weight, then the lower
  recent latency, remaining ties at random.
- "latency": the lower recent latency first, then fewest in flight per weight, then random.
  A member with no latency yet counts as the fastest, so every member gets measured.
- "random": at random, in proportion to the members' weights.
- "ordered": in the order the spec lists them (a group that is a preference, not a balance).

`Load` keeps one target's figures. Latency is an exponentially weighted moving average of
the time to first content (a generate: its answer; a stream: its first content event),
and the last `SAMPLES` values are kept for percentiles (`ChainConfig.hedge_after="p95"`).
Only targets that need them are tracked: members of a group, targets with limits, and the
targets of a chain that hedges; a plain chain pays nothing.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from typing import TYPE_CHECKING, Final, Literal, TypeAlias, final

if TYPE_CHECKING:
    from ._chain._config import Target
    from ._limits import Lease
    from ._response import Usage

__all__ = [
    "SAMPLES",
    "STRATEGIES",
    "Cursor",
    "Group",
    "Hold",
    "Load",
    "LoadTracker",
    "Strategy",
]

Strategy: TypeAlias = Literal["least-busy", "latency", "random", "ordered"]
STRATEGIES: Final[tuple[str, ...]] = ("least-busy", "latency", "random", "ordered")

SAMPLES: Final = 64
"""Times to first content kept per target for percentiles."""
_ALPHA: Final = 0.2
"""Weight of a new sample in the moving average: about the last ten calls count."""
MIN_SAMPLES: Final = 10
"""Fewer samples than this give no percentile (the pooled figures are used instead)."""


@final
class Load:
    """One target's load: calls in flight, and its recent time to first content."""

    __slots__ = ("_next", "_sorted", "in_flight", "latency", "samples")

    def __init__(self) -> None:
        self.in_flight = 0
        """Attempts on this target not yet ended (a stream's ends when the stream does)."""
        self.latency: float | None = None
        """Moving average of the seconds to first content; None before the first answer."""
        self.samples: list[float] = []
        self._next = 0
        self._sorted: list[float] | None = None

    def observe(self, seconds: float) -> None:
        """An attempt answered `seconds` after it started."""
        latency = self.latency
        self.latency = seconds if latency is None else latency + _ALPHA * (seconds - latency)
        samples = self.samples
        if len(samples) < SAMPLES:
            samples.append(seconds)
        else:
            samples[self._next] = seconds
            self._next = (self._next + 1) % SAMPLES
        self._sorted = None

    def percentile(self, fraction: float) -> float | None:
        """The `fraction` (0..1) percentile of the kept samples; None with too few."""
        if len(self.samples) < MIN_SAMPLES:
            return None
        ordered = self._sorted
        if ordered is None:
            ordered = self._sorted = sorted(self.samples)
        return ordered[min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1)]


@final
class LoadTracker:
    """Every tracked target's `Load`, and the groups each belongs to. One per registry
    (shared by its chains, like the health tracker)."""

    __slots__ = ("_groups", "loads", "pooled")

    def __init__(self) -> None:
        self.loads: dict[str, Load] = {}
        self.pooled = Load()
        """Every tracked target's samples together: a percentile for a target not yet
        measured enough."""
        self._groups: dict[str, dict[str, None]] = {}

    def load(self, key: str) -> Load:
        """`key`'s figures (created on first use)."""
        load = self.loads.get(key)
        if load is None:
            load = self.loads[key] = Load()
        return load

    def answered(self, load: Load, seconds: float) -> None:
        """An attempt on `load`'s target answered after `seconds`."""
        load.observe(seconds)
        self.pooled.observe(seconds)

    def percentile(self, key: str, fraction: float) -> float | None:
        """`key`'s percentile of time to first content, else the pooled one, else None."""
        load = self.loads.get(key)
        value = load.percentile(fraction) if load is not None else None
        return value if value is not None else self.pooled.percentile(fraction)

    def add_group(self, group: Group) -> None:
        """Remember that `group`'s members belong to it (for `snapshot`)."""
        for member in group.members:
            self.load(member.key)
            self._groups.setdefault(member.key, {})[group.label] = None

    def groups(self, key: str) -> tuple[str, ...]:
        """The labels of the groups `key` is a member of ("a/x|b/x")."""
        return tuple(self._groups.get(key, ()))


@final
class Group:
    """One chain position of equivalent targets, with their weights."""

    __slots__ = ("label", "loads", "members", "weights")

    def __init__(self, members: Iterable[Target], weights: Iterable[float], tracker: LoadTracker):
        self.members = tuple(members)
        self.weights = tuple(weights)
        self.label = "|".join(member.key for member in self.members)
        """The group as a spec writes it (without weights)."""
        self.loads = tuple(tracker.load(member.key) for member in self.members)
        tracker.add_group(self)

    def pick(self, strategy: str, tried: set[str], rng: random.Random) -> Target | None:
        """The best member not in `tried` by `strategy` (None when every one was tried)."""
        if strategy == "ordered":
            return next((m for m in self.members if m.key not in tried), None)
        if strategy == "random":
            return self._weighted(tried, rng)
        busy_first = strategy == "least-busy"
        best: Target | None = None
        best_rank: tuple[float, float] = (math.inf, math.inf)
        ties = 0
        for member, load, weight in zip(self.members, self.loads, self.weights, strict=True):
            if member.key in tried:
                continue
            busy, latency = load.in_flight / weight, load.latency or 0.0
            rank = (busy, latency) if busy_first else (latency, busy)
            if best is None or rank < best_rank:
                best, best_rank, ties = member, rank, 1
            elif rank == best_rank:
                ties += 1
                if rng.random() * ties < 1.0:  # reservoir sampling: each tie 1/ties
                    best = member
        return best

    def _weighted(self, tried: set[str], rng: random.Random) -> Target | None:
        total = sum(
            w for m, w in zip(self.members, self.weights, strict=True) if m.key not in tried
        )
        point = rng.random() * total
        chosen: Target | None = None
        for member, weight in zip(self.members, self.weights, strict=True):
            if member.key in tried:
                continue
            chosen = member
            point -= weight
            if point < 0:
                break
        return chosen

    def __repr__(self) -> str:
        return f"Group({self.label})"


@final
class Cursor:
    """One pass of a call over a chain's positions: the next target to try, a group's
    members best first (picked when reached, from the figures of that moment). Shared by
    the two lanes of a hedged call: no target is handed out twice in a pass."""

    __slots__ = ("index", "positions", "rng", "strategy", "tried")

    def __init__(
        self,
        positions: tuple[Target | Group, ...],
        start: int,
        done: Iterable[str],
        strategy: str,
        rng: random.Random,
    ) -> None:
        self.positions = positions
        self.index = start
        self.tried: set[str] = set(done)
        """Keys handed out (or done before the pass, for a restart)."""
        self.strategy = strategy
        self.rng = rng

    def next(self) -> Target | None:
        """The next target to try, or None at the end of the chain."""
        positions, tried = self.positions, self.tried
        while self.index < len(positions):
            position = positions[self.index]
            if isinstance(position, Group):
                member = position.pick(self.strategy, tried, self.rng)
                if member is not None:
                    tried.add(member.key)
                    return member
            elif position.key not in tried:
                tried.add(position.key)
                return position
            self.index += 1
        return None

    def remaining(self) -> list[Target]:
        """The targets this pass has not handed out yet, in chain order."""
        tried = self.tried
        found: list[Target] = []
        for position in self.positions[self.index :]:
            members = position.members if isinstance(position, Group) else (position,)
            found.extend(member for member in members if member.key not in tried)
        return found


@final
class Hold:
    """What a tracked attempt holds until it ends: one of its target's calls in flight,
    and its limits' lease when the target has limits. A stream holds it until it ends."""

    __slots__ = ("lease", "load", "tracker")

    def __init__(self, tracker: LoadTracker, load: Load, lease: Lease | None) -> None:
        self.tracker = tracker
        self.load: Load | None = load
        self.lease = lease
        load.in_flight += 1

    def answered(self, seconds: float) -> None:
        """The attempt produced its first content `seconds` after it started."""
        if self.load is not None:
            self.tracker.answered(self.load, seconds)

    def end(self, usage: Usage | None = None) -> None:
        """The attempt is over (its stream ended): the call leaves the target, the lease's
        slot is freed and its token estimate replaced by `usage`. Idempotent."""
        load, self.load = self.load, None
        if load is None:
            return
        load.in_flight -= 1
        lease = self.lease
        if lease is not None:
            # No usage reported (a failure, a stream closed early): the estimate stands.
            tokens = usage.input_tokens + usage.output_tokens if usage is not None else 0
            lease.settle(tokens or None)
            lease.release()
