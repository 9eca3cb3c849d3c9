"""Who a run is for: the attribution both LangChain adapters open their runs with."""

from __future__ import annotations

from dataclasses import dataclass

from budgetwarden import Run, Warden
from budgetwarden.warden import check_attribution

__all__ = ["Attribution"]


@dataclass(frozen=True, slots=True)
class Attribution:
    """The scopes a run is attributed to; ``thread`` falls back to the framework's own."""

    agent: str | None = None
    user: str | None = None
    workspace: str | None = None
    workflow: str | None = None
    task_class: str | None = None
    key: str | None = None
    thread: str | None = None

    def check(self, where: str) -> Attribution:
        """This attribution, once every scope is known to be a string or None."""
        check_attribution(where, {name: getattr(self, name) for name in self.__slots__})
        return self

    def open_run(
        self, warden: Warden, thread: str | None = None, *, parent: Run | None = None
    ) -> Run:
        """Open a run for these scopes (a child of ``parent`` when given), on the given
        thread unless one was set explicitly; a child inherits what it does not set."""
        return warden.run(
            agent=self.agent,
            user=self.user,
            workspace=self.workspace,
            workflow=self.workflow,
            task_class=self.task_class,
            key=self.key,
            thread=self.thread or thread,
            parent=parent,
        )
