"""A named registry: the one shape every pluggable backend takes (teachers, tuners,
readers, scorers). Unknown names fail with the list of valid ones."""

from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

from endcloud.errors import RegistryError

T = TypeVar("T")


class Registry(Generic[T]):
    """A dict of name -> implementation with a helpful error for unknown names.

    >>> TUNERS = Registry("tuner")
    >>> @TUNERS.register("lora")
    ... def lora_config(**kw): ...
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            return obj

        return deco

    def add(self, name: str, obj: T) -> None:
        self.register(name)(obj)

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            valid = ", ".join(sorted(self._items)) or "(none registered)"
            raise RegistryError(f"unknown {self.kind} {name!r}; valid: {valid}") from None

    __getitem__ = get

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def names(self) -> list[str]:
        return sorted(self._items)
