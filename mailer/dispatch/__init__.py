"""Dispatch: run one send from claim to last result. Orchestration only: SQL lives in
``storage``, SMTP in ``transport``, rendering and MIME in ``compose``.

The path of a send::

    claim (scheduled -> running, once) -> materialise deliveries (INSERT ... SELECT, repeat-safe)
    -> pre-flight (render every recipient, compose the first ones whole; a recipient's own
       failure fails that delivery, the campaign's pauses the send untouched; in the render
       pool's processes for a large send, ended before the first pass)  [engine, preflight]
    -> produce: due deliveries by keyset batches, leased to this node          [send_pass]
    -> the feed: each one composed here, or in the render pool for a large send      [feed]
    -> pool_size lanes (one per pooled SMTP connection): transport.send, one message
       each at a time, its fate judged by the policy                    [send_pass, policy]
    -> record: results written in group commits of ``record_batch``           [send_pass]

Words: the *node* is this daemon (or CLI command), the one that claims sends and leases
deliveries; a *lane* is one of the tasks sending over the pooled SMTP connections; the
*render pool* is the child processes composing a large send (``render_pool``); a *pass* is
one sweep over the due deliveries (a send with retries takes several).

**The duplicate window.** A message is recorded ``sent`` only after the relay accepted it,
and results are committed in groups. A crash (kill -9) between the relay's 250 and the commit
leaves those deliveries ``queued``, and they go again when the send resumes. At most
``pool_size`` messages are in the lanes and at most ``record_batch`` results wait in the
recorder (:class:`~.send_pass.DuplicateWindow`), so a crash doubles at most
``pool_size + record_batch`` messages; nothing else is ever sent twice, and nothing is ever
lost: every delivery ends sent, failed or skipped. When results cannot be recorded, the
lanes stop: never a message sent without a record.

A node that lost its lease (frozen, cut off) sends nothing more of what it held: before
each message it checks that its lease on the delivery has time left, with a margin
(fencing), so a frozen node cannot stretch that window either.

An unsubscribe or suppression that lands mid-send is seen when the delivery's batch is
fetched, and the delivery is skipped. Staff pausing or cancelling the send is seen within
half a second; SIGTERM stops the producer and the lanes, lets the messages in hand finish,
records what was sent and gives the leases back. A run of ``error_threshold`` consecutive
failures pauses the send with the last reply as reason; an authentication or TLS failure
pauses it at once, with the recipient in hand left queued. Permanent refusals at an
implausible rate (:class:`~.policy.RejectWatch`) and any 5.7.x reply pause it too, and those
refusals are put back in the queue: a broken relay neither fails nor suppresses anybody.

The modules: :mod:`~.engine` (:class:`Engine`, :class:`RunSummary`: the send, the
pre-flight, the composers), :mod:`~.preflight` (the pre-flight's checks as values, and their
tally), :mod:`~.send_pass` (the stages of one pass), :mod:`~.feed` (where composing and the
pre-flight's checks run), :mod:`~.render_pool` (the child processes), :mod:`~.policy` (the
rules, pure). ``Engine`` and ``RunSummary`` are loaded on first use: the render pool's
processes import :mod:`~.render_pool` and must not pay for storage and SMTP.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mailer.dispatch.engine import Engine, RunSummary


def __getattr__(name: str) -> Any:
    if name in __all__:
        from mailer.dispatch import engine

        value = getattr(engine, name)
        globals()[name] = value  # once: the next look-up finds it here
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Engine", "RunSummary"]
