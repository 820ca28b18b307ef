"""Frozen vision foundation models whose features the semantic decoder learns to predict.

Importing this package registers every teacher family (the imports below): ``build_teacher``, ``teacher_dim``,
``available_teachers()`` and ``TEACHERS`` then know all of them.
"""
from rectok_core.teachers import dino, inception, siglip  # noqa: F401 - the registry import: each module registers itself
from rectok_core.teachers.registry import (
    NO_TEACHER,
    TEACHERS,
    available_teachers,
    build_teacher,
    register_teacher,
    teacher_dim,
    teacher_help,
    teacher_spec,
)

__all__ = ["NO_TEACHER", "TEACHERS", "available_teachers", "build_teacher", "register_teacher", "teacher_dim",
           "teacher_help", "teacher_spec"]
