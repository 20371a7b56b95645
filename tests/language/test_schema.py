"""archc.schema.json, as shipped, locates mistakes in the editors' own validators (check-jsonschema, taplo,
python-jsonschema's Draft 2020-12): at the layer or attribute that is wrong, never as "not valid under any of
the given schemas" for a whole layer; every example spec validates; a JSON spec may carry "$schema"."""
from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any, Callable

import jsonschema
import pytest
from click.testing import CliRunner

from archc.cli import main
from archc.errors import ArchcError
from archc.language.schema import json_schema
from archc.ops import REGISTRY
from archc.pipeline import compile_spec

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "archc.schema.json"
SPECS = sorted((ROOT / "specs").glob("*.toml")) + sorted((ROOT / "specs").glob("*.json"))
BIN = Path(sys.executable).parent
ANYOF = "is not valid under any of the given schemas"


def load(path: Path) -> dict[str, Any]:
    return tomllib.loads(path.read_text()) if path.suffix == ".toml" else json.loads(path.read_text())


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def errors(validator: jsonschema.Draft202012Validator, spec: dict[str, Any]) -> list[tuple[str, str]]:
    return sorted((e.json_path, e.message) for e in validator.iter_errors(spec))


def test_shipped_schema_is_archc_schema_output_byte_for_byte():
    r = CliRunner().invoke(main, ["schema"], catch_exceptions=False)
    assert r.exit_code == 0
    assert SHIPPED.read_bytes() == r.output.encode(), "archc.schema.json is stale: run `make schema`"


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_every_example_spec_validates_and_names_the_shipped_schema(validator, path):
    spec = load(path)
    assert errors(validator, spec) == []
    if path.suffix == ".toml":  # the `#:schema` directive resolves, from the spec's folder, to the shipped file
        first = path.read_text().splitlines()[0]
        assert first.startswith("#:schema "), first
        assert (path.parent / first.split(maxsplit=1)[1]).resolve() == SHIPPED


def digits() -> dict[str, Any]:
    return load(ROOT / "specs" / "digit_classifier.toml")   # layers: flatten, fc1, fc2, logits


def residual() -> dict[str, Any]:
    return load(ROOT / "specs" / "residual_cnn.toml")       # blocks and `use` layers


def conv(spec: dict[str, Any]) -> dict[str, Any]:
    spec["layers"].insert(0, {"op": "conv2d", "out_channels": 4, "kernel_size": 3})
    return spec


def setting(fn: Callable[[dict[str, Any]], Any]) -> Callable[[], dict[str, Any]]:
    def make(base: Callable[[], dict[str, Any]] = digits) -> dict[str, Any]:
        spec = base()
        fn(spec)
        return spec
    return make


def rename(layer: dict[str, Any], old: str, new: str) -> None:
    layer[new] = layer.pop(old)


def block_layer(spec: dict[str, Any]) -> dict[str, Any]:
    return next(iter(spec["blocks"].values()))["layers"][0]


def use_layer(spec: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    return next((i, l) for i, l in enumerate(spec["layers"]) if "use" in l)


# (name, the bad spec, the error's path, words the message must hold)
BAD = [
    ("attribute typo", lambda: setting(lambda s: rename(s["layers"][1], "out_features", "out_featurs"))(),
     "$.layers[1]", "'out_featurs' was unexpected"),
    ("wrong type", lambda: setting(lambda s: conv(s)["layers"][0].update(kernel_size="3"))(),
     "$.layers[0].kernel_size", "'3' is not of type 'integer', 'array'"),
    ("wrong type in a list", lambda: setting(lambda s: conv(s)["layers"][0].update(kernel_size=[3, "x"]))(),
     "$.layers[0].kernel_size[1]", "'x' is not of type 'integer'"),
    ("unknown op", lambda: setting(lambda s: s["layers"][1].update(op="lineer"))(),
     "$.layers[1].op", "'lineer' is not one of"),
    ("unknown activation", lambda: setting(lambda s: s["layers"][1].update(act="rleu"))(),
     "$.layers[1].act", "'rleu' is not one of"),
    ("value out of range", lambda: setting(lambda s: s["layers"][1].update(out_features=0))(),
     "$.layers[1].out_features", "0 is less than the minimum of 1"),
    ("no op and no use", lambda: setting(lambda s: s["layers"][1].pop("op"))(),
     "$.layers[1]", "'op' is a required property"),
    ("attribute typo in a block", lambda: setting(lambda s: block_layer(s).update(bogus=1))(residual),
     "$.blocks.res.layers[0]", "'bogus' was unexpected"),
    ("typo in a use layer", lambda: setting(lambda s: use_layer(s)[1].update(repeet=2))(residual),
     None, "'repeet' was unexpected"),
    ("typo in a table-or-name choice", lambda: setting(
        lambda s: s.setdefault("train", {}).update(schedule={"name": "step", "step_siz": 3}))(),
     "$.train.schedule", "'step_siz' was unexpected"),
    ("unknown task kind", lambda: setting(lambda s: s["task"].update(kind="clasification"))(),
     "$.task.kind", "'clasification' is not one of"),
    ("$schema not a string", lambda: setting(lambda s: s.update({"$schema": 3}))(),
     "$['$schema']", "3 is not of type 'string'"),
]


@pytest.mark.parametrize("name, make, path, words", BAD, ids=[b[0] for b in BAD])
def test_known_bad_specs_fail_at_the_right_path(validator, name, make, path, words):
    spec = make()
    if path is None:  # the use layer's index depends on the example spec
        path = f"$.layers[{use_layer(spec)[0]}]"
    found = errors(validator, spec)
    assert (path, next((m for p, m in found if p == path and words in m), None)) in found, found
    assert not any(ANYOF in m for _, m in found), found
    with pytest.raises(ArchcError):  # archc itself refuses it too: the schema is not looser than archc
        compile_spec(spec, name="bad.json")


GOOD = [
    ("param refs", lambda s: s["layers"][1].update(out_features="$width", act="$a")),
    ("param ref in a list", lambda s: conv(s)["layers"][0].update(kernel_size=["$k", 3], padding="$k")),
    ("nulls in JSON", lambda s: s["layers"][1].update(act=None, id=None, **{"from": None})),
    ("$schema in JSON", lambda s: s.update({"$schema": "../archc.schema.json"})),
]


@pytest.mark.parametrize("name, change", GOOD, ids=[g[0] for g in GOOD])
def test_specs_archc_accepts_the_schema_accepts(validator, name, change):
    spec = digits()
    spec.setdefault("params", {}).update(width=32, k=1, a="relu")
    change(spec)
    assert errors(validator, spec) == []
    compile_spec(spec)


def test_every_op_example_is_a_layer_the_schema_accepts(validator):
    """The schema is not stricter than archc for any op: each op's conformance examples validate as layers."""
    checked = 0
    for name, cls in REGISTRY.items():
        for example in cls.examples:
            layer = {"op": name, **example.attrs}
            assert errors(validator, {**digits(), "layers": [layer]}) == [], (name, example.attrs)
            checked += 1
    assert checked >= len(REGISTRY)


def tool(name: str) -> str:
    path = BIN / name
    if not path.exists():
        path = Path(shutil.which(name) or name)
    return str(path)


def bad_json(tmp_path: Path) -> Path:
    spec = conv(digits())
    spec["layers"][0]["kernel_size"] = "3"
    rename(spec["layers"][2], "out_features", "out_featurs")
    spec["layers"][3]["act"] = "rleu"
    out = tmp_path / "bad.json"
    out.write_text(json.dumps({"$schema": str(SHIPPED), **spec}, indent=2))
    return out


def test_check_jsonschema_locates_each_mistake(tmp_path):
    good = subprocess.run([tool("check-jsonschema"), "--schemafile", str(SHIPPED), str(ROOT / "specs" /
                                                                                       "two_branch.json")],
                          capture_output=True, text=True, timeout=120)
    assert good.returncode == 0, good.stdout + good.stderr
    bad = bad_json(tmp_path)
    r = subprocess.run([tool("check-jsonschema"), "--schemafile", str(SHIPPED), str(bad)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    out = r.stdout + r.stderr
    assert f"{bad}::$.layers[0].kernel_size: '3' is not of type 'integer', 'array'" in out, out
    assert f"{bad}::$.layers[2]: Additional properties are not allowed ('out_featurs' was unexpected)" in out, out
    assert f"{bad}::$.layers[3].act: 'rleu' is not one of" in out, out
    assert ANYOF not in out and "anyOf" not in out


def taplo(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    # --no-auto-config: no taplo.toml of the machine's; schemas are local files, nothing is fetched
    return subprocess.run([tool("taplo"), "check", "--no-auto-config", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=120, env={"PATH": "/usr/bin:/bin", "RUST_LOG": "warn"})


def test_taplo_checks_the_example_specs_through_their_schema_directive():
    r = taplo(*[p.name for p in SPECS if p.suffix == ".toml"], cwd=ROOT / "specs")
    assert r.returncode == 0, r.stdout + r.stderr


def test_taplo_locates_a_typo_and_a_wrong_type(tmp_path):
    (tmp_path / "specs").mkdir()
    shutil.copy(SHIPPED, tmp_path / "archc.schema.json")  # as in the repository: ../archc.schema.json
    text = (ROOT / "specs" / "digit_classifier.toml").read_text()
    assert text.count("out_features = 256") == 1
    text = text.replace("out_features = 256", "out_featurs = 256").replace(
        'op = "flatten"', 'op = "flatten"\n\n[[layers]]\nop = "conv2d"\nout_channels = 4\nkernel_size = "3"')
    (tmp_path / "specs" / "bad.toml").write_text(text)
    r = taplo("bad.toml", cwd=tmp_path / "specs")
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    located = re.findall(r"error: (.*)\n\s*┌─ \S*bad\.toml:(\d+):(\d+)", out)  # message, line, column
    found = {(m, int(line), int(col)) for m, line, col in located}
    lines = text.splitlines()
    typo = next(i for i, l in enumerate(lines, 1) if l.startswith("out_featurs"))
    assert ("Additional properties are not allowed ('out_featurs' was unexpected)", typo, 1) in found, out
    kernel = next(i for i, l in enumerate(lines, 1) if l.startswith("kernel_size"))
    assert ('"3" is not of types "array", "integer"', kernel, 15) in found, out
    assert ANYOF not in out and "anyOf" not in out


def test_a_json_spec_may_carry_its_schema_and_hashes_as_without(tmp_path):
    spec = json.loads((ROOT / "specs" / "two_branch.json").read_text())
    plain, marked = tmp_path / "plain.json", tmp_path / "marked.json"
    plain.write_text(json.dumps(spec))
    marked.write_text(json.dumps({"$schema": "../archc.schema.json", **spec}))
    r = CliRunner().invoke(main, ["validate", str(marked)])
    assert r.exit_code == 0, r.output
    a, b = compile_spec(plain), compile_spec(marked)
    assert a.sha256 == b.sha256 and "$schema" not in b.raw


def test_a_schema_key_that_is_not_a_string_is_a_located_error(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"$schema": 3, **json.loads((ROOT / "specs" / "two_branch.json").read_text())}))
    r = CliRunner().invoke(main, ["validate", str(bad)])
    assert r.exit_code == 1
    assert f"error: {bad}: $schema: expected the schema's path or URL as a string, received 3" in r.output
