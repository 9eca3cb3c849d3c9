"""budgetwarden for CrewAI: ``guard_crew`` governs a crew's kickoffs; ``RoutedLLM`` routes.

```python
from budgetwarden.integrations.crewai import guard_crew
result = guard_crew(crew, warden, user="u1").kickoff()
```

With ``Policy(on_exceeded="pause")`` a stopped kickoff saves a handle (``result.handle``) that
``resume_crewai(warden, handle, crew)`` continues after the tasks it had finished.
"""

from __future__ import annotations

try:
    import crewai  # noqa: F401
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "budgetwarden.integrations.crewai needs crewai: pip install 'budgetwarden[crewai]'"
    ) from error

from ._output import GuardedCrewOutput
from ._streaming import GuardedCrewStreamingOutput
from .guard import GuardedCrew, aresume_crewai, guard_crew, resume_crewai
from .routed import RoutedLLM, litellm_factory

__all__ = [
    "GuardedCrew",
    "GuardedCrewOutput",
    "GuardedCrewStreamingOutput",
    "RoutedLLM",
    "aresume_crewai",
    "guard_crew",
    "litellm_factory",
    "resume_crewai",
]
