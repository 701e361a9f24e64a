"""The task registry (a leaf module: it imports no task, so tasks may import it freely).

A task class registers itself with :func:`register_task` and is then available to recipes as
``task: <name>``. :func:`get_task` looks one up; the built-in tasks are registered when
:mod:`spdnn.tasks` is imported (:func:`spdnn.tasks.build_task` does that).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from spdnn.errors import SpecError

if TYPE_CHECKING:
    from spdnn.train.task import Task

TASKS: dict[str, type[Task]] = {}
"""Registered task classes by name."""


def register_task(cls: type[Task]) -> type[Task]:
    """Class decorator: make a task available to recipes as ``task: <cls.name>``.

    Raises:
        ValueError: another class is already registered under that name.
    """
    name = cls.name
    if name in TASKS and TASKS[name] is not cls:
        raise ValueError(f"task {name!r} is already registered by {TASKS[name].__qualname__}")
    TASKS[name] = cls
    return cls


def unregister_task(name: str) -> None:
    """Remove a registered task (for tests and plug-ins that register temporarily)."""
    TASKS.pop(name, None)


def get_task(name: str) -> type[Task]:
    """The task class registered under ``name``.

    Raises:
        SpecError: no such task (the message lists the known ones).
    """
    if name not in TASKS:
        raise SpecError(f"unknown task '{name}'", field="task",
                        hint=f"known tasks: {', '.join(sorted(TASKS)) or 'none registered'}")
    return TASKS[name]
