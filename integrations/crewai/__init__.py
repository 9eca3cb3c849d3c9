"""budgetwarden for CrewAI: ``guard_crew`` governs a crew's kickoffs; ``RoutedLLM`` routes.

```python
from budgetwarden.integrations.crewai import guard_crew
result = guard_crew(crew, warden, user="u1").kickoff()
```
"""

from __future__ import annotations

try:
    import crewai  # noqa: F401
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "budgetwarden.integrations.crewai needs crewai: pip install 'budgetwarden[crewai]'"
    ) from error

from ._output import GuardedCrewOutput
from .guard import GuardedCrew, guard_crew
from .routed import RoutedLLM, litellm_factory

__all__ = ["GuardedCrew", "GuardedCrewOutput", "RoutedLLM", "guard_crew", "litellm_factory"]
