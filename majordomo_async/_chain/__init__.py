"""The failover chain: `Chain`, its `ChainConfig`, and `chain_do`, its loop.

Where things are:

- `_policy.py`: THE RULES (its docstring is the numbered list) and the pure functions
  that decide what an error means and how long a retry waits;
- `_loop.py`: `Chain`, `chain_do` and the per-call loop, each branch tagged with its rule;
- `_attempt.py`: one attempt, bounded by the call's deadline and the attempt timeout;
- `_streams.py`: generate vs establishing a stream, a stream's verdict when it ends, and
  the mid-stream restart relay;
- `_observer.py`: logging and hooks, one method per moment of a call;
- `_config.py`: `ChainConfig` and `Target`.
"""

from ._config import DEFAULT_TRANSIENT_RETRIES, ChainConfig, Target
from ._loop import Chain, chain_do

__all__ = ["DEFAULT_TRANSIENT_RETRIES", "Chain", "ChainConfig", "Target", "chain_do"]
