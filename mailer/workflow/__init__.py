"""The workflow of a campaign, one code path for the command line and the console: its
spec (the campaign file as data, bodies inlined), the approval's snapshot, its schedule,
and the changes of an event (move, cancel) planned before they are applied.

Orchestration beside :mod:`mailer.dispatch`: it reads the store and decides, and returns
values (dataclasses); it prints nothing, sends nothing and imports neither the transport
nor the web app, so the console can use all of it.

- :mod:`~mailer.workflow.specs`: :func:`spec_of`, :func:`campaign_of`;
- :mod:`~mailer.workflow.approval`: the snapshot an approval freezes (content and templates
  by hash, lists and audience);
- :mod:`~mailer.workflow.scheduling`: a campaign's sends planned and stored
  (``campaign create``, the console's schedule);
- :mod:`~mailer.workflow.events`: an event's update and cancellation, planned then applied.
"""

from mailer.workflow.specs import campaign_of, spec_of

__all__ = ["campaign_of", "spec_of"]
