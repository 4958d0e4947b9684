"""config/efm_ros.yaml holds only real overrides: each default of the graph has one home, the node's
declared parameter (with its descriptor), so a default changed in code takes effect under launch too.

The declarations are read from the node modules' source (``declare(self, "name", default, ...)`` and
``self.declare_parameter("name", ...)``), so this runs without starting ROS."""
from __future__ import annotations

import ast
import importlib
import inspect

import pytest
import yaml

from efm_ros.graph.description import default_params_file, describe_graph

NO_DEFAULT = object()  # declared by type only


def declared_parameters(module_name: str) -> dict[str, object]:
    """name -> default of every parameter the node module declares."""
    module = importlib.import_module(module_name)
    out = {}
    for call in ast.walk(ast.parse(inspect.getsource(module))):
        if not isinstance(call, ast.Call):
            continue
        fn = call.func
        if isinstance(fn, ast.Name) and fn.id == "declare" and len(call.args) >= 3:
            name, default = call.args[1], call.args[2]
        elif isinstance(fn, ast.Attribute) and fn.attr == "declare_parameter" and call.args:
            name, default = call.args[0], (call.args[1] if len(call.args) > 1 else None)
        else:
            continue
        if not isinstance(name, ast.Constant):
            continue
        try:
            value = ast.literal_eval(default) if default is not None else NO_DEFAULT
        except ValueError:  # a module constant (e.g. DEFAULT_CHUNK_BYTES) or a type (Parameter.Type...)
            value = getattr(module, default.id) if isinstance(default, ast.Name) else NO_DEFAULT
        out[name.value] = value
    return out


NODES = {s.name: s.entry.partition(":")[0] for s in describe_graph(robots=1, sim=True)}


def test_the_declarations_are_found():
    declared = {node: declared_parameters(mod) for node, mod in NODES.items()}
    assert declared["steps_to_go"]["max_episode_steps"] == 100
    assert declared["sim_robot"]["backend"].endswith(":TabletopRobot")
    assert declared["logger"]["exclude_topics"] is NO_DEFAULT
    assert all(len(d) >= 5 for d in declared.values()), declared


def _site_values():
    doc = yaml.safe_load(default_params_file().read_text())
    for section, body in doc.items():
        assert section.startswith("/**/"), f"{section}: sections apply in every namespace (/**/<node>)"
        node = section[len("/**/"):]
        assert node in NODES, f"{section}: no node {node!r} in the graph ({sorted(NODES)})"
        for name, value in body["ros__parameters"].items():
            yield node, name, value


@pytest.mark.parametrize("node,name,value", list(_site_values()))
def test_every_site_value_overrides_a_declared_parameter(node, name, value):
    declared = declared_parameters(NODES[node])
    assert name in declared, f"{node} declares no parameter {name!r} (typo?): {sorted(declared)}"
    default = declared[name]
    if default is NO_DEFAULT:
        return
    assert value != default, f"{node}.{name}: {value!r} repeats the node's default; set it in one place"
    assert type(value) is type(default), f"{node}.{name}: {value!r} is not a {type(default).__name__} like its default"
