"""Nested tuples, lists, dicts and namedtuples of leaves, flattened and rebuilt.

Written here rather than borrowed from a framework so that pytrees work the
same for every framework and ``import gradguard`` imports none of them.
Every non-container object, ``None`` included, is a leaf, except that once
the caller has imported JAX, the containers JAX knows (classes registered
with ``jax.tree_util``: equinox modules, flax structs, registered
dataclasses) are traversed through ``jax.tree_util``, one level at a time,
and named by their keys (``.w``, ``['dense']``).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

__all__ = ["TreeDef", "flatten", "flatten_arguments", "key_path_name", "leaves", "unflatten"]


@dataclass(frozen=True)
class TreeDef:
    kind: str  # "leaf", "tuple", "list", "dict", "namedtuple", "jax" (cls: its treedef)
    children: tuple[TreeDef, ...] = ()
    keys: tuple[Any, ...] = ()
    cls: Any = None

    @property
    def num_leaves(self) -> int:
        if self.kind == "leaf":
            return 1
        return sum(c.num_leaves for c in self.children)


_LEAF = TreeDef("leaf")


def flatten(tree: Any, prefix: str = "") -> tuple[list[Any], list[str], TreeDef]:
    """Leaves in order, their paths (``prefix[0]['w']``), and the structure."""
    leaves: list[Any] = []
    paths: list[str] = []
    treedef = _flatten(tree, prefix, leaves, paths)
    return leaves, paths, treedef


def _flatten(tree: Any, path: str, leaves: list[Any], paths: list[str]) -> TreeDef:
    if isinstance(tree, tuple) and hasattr(tree, "_fields"):
        children = tuple(
            _flatten(v, f"{path}.{name}", leaves, paths) for name, v in zip(tree._fields, tree)
        )
        return TreeDef("namedtuple", children, tuple(tree._fields), type(tree))
    if isinstance(tree, (tuple, list)):
        children = tuple(_flatten(v, f"{path}[{i}]", leaves, paths) for i, v in enumerate(tree))
        return TreeDef("tuple" if isinstance(tree, tuple) else "list", children)
    if isinstance(tree, dict):
        keys = tuple(tree.keys())
        children = tuple(_flatten(tree[k], f"{path}[{k!r}]", leaves, paths) for k in keys)
        return TreeDef("dict", children, keys, type(tree))
    node = _jax_node(tree, with_keys=True)
    if node is not None:
        names, values, jax_treedef = node
        children = tuple(_flatten(v, f"{path}{k}", leaves, paths) for k, v in zip(names, values))
        return TreeDef("jax", children, tuple(names), jax_treedef)
    leaves.append(tree)
    paths.append(path)
    return _LEAF


#: Types JAX holds for leaves: asked once each.
_JAX_LEAF_TYPES: set[type] = set()


def _jax_node(tree: Any, with_keys: bool) -> tuple[list[str], list[Any], Any] | None:
    """The children of a container JAX knows (one level), their keys as
    paths (``.w``, ``['dense']``; empty unless ``with_keys``) and JAX's
    treedef of that level; None for a leaf, or when JAX is not imported."""
    jax = sys.modules.get("jax")
    if jax is None or tree is None or type(tree) in _JAX_LEAF_TYPES:
        return None
    tree_util = getattr(jax, "tree_util", None)
    if tree_util is None:  # jax half imported
        return None
    if with_keys:
        pairs, treedef = tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: x is not tree)
        values = [v for _, v in pairs]
    else:
        values, treedef = tree_util.tree_flatten(tree, is_leaf=lambda x: x is not tree)
    if tree_util.treedef_is_leaf(treedef):
        _JAX_LEAF_TYPES.add(type(tree))
        return None
    keys = [_key_name(path[-1]) for path, _ in pairs] if with_keys else []
    return keys, values, treedef


def key_path_name(path: Any) -> str:
    """A JAX key path as Python spells the access: ``['dense'].w[2]``."""
    return "".join(_key_name(key) for key in path)


def _key_name(key: Any) -> str:
    """One key of a JAX key path as Python spells the access."""
    name = type(key).__name__
    if name == "GetAttrKey":
        return f".{key.name}"
    if name == "DictKey":
        return f"[{key.key!r}]"
    if name == "SequenceKey":
        return f"[{key.idx}]"
    if name == "FlattenedIndexKey":
        return f"[{key.key}]"
    return str(key)


def leaves(tree: Any) -> list[Any]:
    """The leaves alone, in the order of :func:`flatten`: no paths to format
    (for what runs at every evaluation)."""
    if isinstance(tree, (tuple, list)):
        return [leaf for child in tree for leaf in leaves(child)]
    if isinstance(tree, dict):
        return [leaf for child in tree.values() for leaf in leaves(child)]
    node = _jax_node(tree, with_keys=False)
    if node is not None:
        return [leaf for child in node[1] for leaf in leaves(child)]
    return [tree]


def unflatten(treedef: TreeDef, leaves: list[Any]) -> Any:
    iterator = iter(leaves)
    return _build(treedef, iterator)


def _build(treedef: TreeDef, leaves: Any) -> Any:
    if treedef.kind == "leaf":
        return next(leaves)
    children = [_build(c, leaves) for c in treedef.children]
    if treedef.kind == "tuple":
        return tuple(children)
    if treedef.kind == "list":
        return children
    if treedef.kind == "namedtuple":
        return treedef.cls(*children)
    if treedef.kind == "jax":
        return treedef.cls.unflatten(children)
    result = dict(zip(treedef.keys, children))
    return result if treedef.cls is dict else treedef.cls(result)


def flatten_arguments(
    args: tuple[Any, ...], names: list[str]
) -> tuple[list[Any], list[str], list[int], TreeDef]:
    """The leaves of positional arguments, their paths under the arguments'
    names, the argument each leaf belongs to, and the structure of ``args``."""
    leaves: list[Any] = []
    paths: list[str] = []
    positions: list[int] = []
    for p, arg in enumerate(args):
        arg_leaves, arg_paths, _ = flatten(arg, names[p])
        leaves += arg_leaves
        paths += arg_paths
        positions += [p] * len(arg_leaves)
    _, _, treedef = flatten(tuple(args))
    return leaves, paths, positions, treedef
