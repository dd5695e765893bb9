"""Reading manifests: positions, formats, stdin, directories, and every way input can be broken."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from canrun.kube.manifests import ManifestLimits, line_of, load_objects, load_text
from canrun.kube.workloads import workloads_from_load

MULTI = """\
# a leading comment
apiVersion: v1
kind: Pod
metadata:
  name: first
spec:
  containers:
  - name: app
    image: busybox
    command: ["sh", "-c", "true"]
  - name: side
    image: nginx
---
---
# empty document above: skipped silently

---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: second
spec:
  template:
    spec:
      initContainers:
        - name: init
          image: alpine
      containers:
        -   name: web
            image: nginx
...
---
apiVersion: v1
kind: ConfigMap
metadata: {name: third}
"""


def names(loaded) -> list[str]:
    return [o.obj["metadata"]["name"] for o in loaded.objects]


def test_multi_document_yaml_keeps_exact_lines() -> None:
    loaded = load_text(MULTI, "deploy.yaml")
    assert loaded.errors == []
    assert names(loaded) == ["first", "second", "third"]
    assert [str(o.source) for o in loaded.objects] == ["deploy.yaml:2", "deploy.yaml:18", "deploy.yaml:33"]
    pod, deploy, _ = (o.obj for o in loaded.objects)
    assert line_of(pod, ["spec", "containers", 0]) == 8
    assert line_of(pod, ["spec", "containers", 1]) == 11
    assert line_of(pod, ["spec", "containers", 0, "command"]) == 10
    assert line_of(pod, ["spec", "containers", 1, "image"]) == 12
    assert line_of(deploy, ["spec", "template", "spec", "initContainers", 0]) == 26
    assert line_of(deploy, ["spec", "template", "spec", "containers", 0]) == 29
    # a path that does not exist ends at the nearest known line
    assert line_of(pod, ["spec", "nope", 3]) == 6
    # objects that never came from a file have no lines
    assert line_of({"a": [{"b": 1}]}, ["a", 0]) is None


def test_yaml_1_1_scalars_merge_keys_and_anchors() -> None:
    text = """\
apiVersion: v1
kind: Pod
metadata:
  name: p
  labels: {on: yes, mode: 0755, when: 2001-12-14, quoted: "0755", n: ~}
spec:
  containers:
    - &base {name: a, image: busybox, env: [{name: X, value: "1"}]}
    - <<: *base
      name: b
"""
    loaded = load_text(text, "p.yaml")
    assert loaded.errors == []
    obj = loaded.objects[0].obj
    assert obj["metadata"]["labels"] == {"on": True, "mode": 0o755, "when": "2001-12-14", "quoted": "0755", "n": None}
    a, b = obj["spec"]["containers"]
    assert b == {"name": "b", "image": "busybox", "env": [{"name": "X", "value": "1"}]}
    assert a["name"] == "a"


def test_json_object_and_list_with_positions(tmp_path: Path) -> None:
    (tmp_path / "pod.json").write_text(
        '{\n  "apiVersion": "v1",\n  "kind": "List",\n  "items": [\n'
        '    {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a"},\n'
        '     "spec": {"containers": [\n'
        '        {"name": "c", "image": "busybox"}]}}\n  ]\n}\n')
    loaded = load_objects([str(tmp_path / "pod.json")])
    assert loaded.errors == [] and loaded.files == 1
    (item,) = loaded.objects
    assert item.obj["kind"] == "List" and item.source.line == 1
    assert line_of(item.obj, ["items", 0]) == 5
    assert line_of(item.obj, ["items", 0, "spec", "containers", 0]) == 7


def test_strict_json_libyaml_refuses_still_reads() -> None:
    # a JSON string escape YAML 1.1 does not know
    loaded = load_text('{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a\\ud83d\\ude00"}}', "x.json")
    assert loaded.errors == []
    assert loaded.objects[0].obj["metadata"]["name"] == "a\U0001F600"


def test_stdin_bytes_and_text_streams() -> None:
    stream = io.TextIOWrapper(io.BytesIO(MULTI.encode()), encoding="utf-8")
    loaded = load_objects(["-"], stdin=stream)
    assert names(loaded) == ["first", "second", "third"]
    assert str(loaded.objects[1].source) == "<stdin>:18"
    assert loaded.files == 1
    # a text-only stream (no .buffer) works too, and "-" twice reads stdin once
    loaded = load_objects(["-", "-"], stdin=io.StringIO(MULTI))
    assert names(loaded) == ["first", "second", "third"]
    # no stdin at all is an error, not a crash
    loaded = load_objects(["-"], stdin=None)
    assert "no standard input" in str(loaded.errors[0])


def test_directories_recursive_sorted_hidden_skipped(tmp_path: Path) -> None:
    def obj(name: str) -> str:
        return f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n"
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "deep").mkdir()
    (tmp_path / ".git").mkdir()
    (tmp_path / "a.yaml").write_text(obj("a"))
    (tmp_path / "b" / "z.yml").write_text(obj("bz"))
    (tmp_path / "b" / "deep" / "c.JSON").write_text('{"apiVersion": "v1", "kind": "ConfigMap", '
                                                   '"metadata": {"name": "bdc"}}')
    (tmp_path / "b" / "notes.txt").write_text("not a manifest: {")
    (tmp_path / ".git" / "x.yaml").write_text(obj("hidden-dir"))
    (tmp_path / ".gitlab-ci.yml").write_text("stages: [build]\n")
    (tmp_path / "c.yaml").write_text(obj("c"))
    loaded = load_objects([str(tmp_path)])
    assert loaded.errors == []
    assert names(loaded) == ["a", "bdc", "bz", "c"]
    assert loaded.files == 4
    assert loaded.objects[1].source.file == os.path.join(str(tmp_path), "b", "deep", "c.JSON")


def test_empty_directory_and_missing_paths_are_named(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "dangling.yaml").symlink_to(tmp_path / "gone.yaml")
    loaded = load_objects([str(tmp_path / "empty"), str(tmp_path / "nope.yaml"), str(tmp_path / "dangling.yaml")])
    messages = [str(e) for e in loaded.errors]
    assert messages[0] == f"{tmp_path / 'empty'}: directory holds no .yaml, .yml or .json files"
    assert messages[1] == f"{tmp_path / 'nope.yaml'}: no such file or directory"
    assert messages[2].startswith(f"{tmp_path / 'dangling.yaml'}: cannot read: No such file or directory")


def test_malformed_document_mid_stream_keeps_the_others() -> None:
    text = """\
apiVersion: v1
kind: ConfigMap
metadata: {name: before}
---
apiVersion: v1
kind: Pod
metadata:
  name: broken
spec:
  containers:
    - name: app: x
      image: busybox
---
apiVersion: v1
kind: ConfigMap
metadata: {name: after}
"""
    loaded = load_text(text, "deploy.yaml")
    assert names(loaded) == ["before", "after"]
    assert [o.source.line for o in loaded.objects] == [1, 14]
    (error,) = loaded.errors
    assert str(error) == "deploy.yaml:11: not valid YAML: mapping values are not allowed in this context"
    assert (error.source, error.line) == ("deploy.yaml", 11)


def test_unrendered_template_is_named_as_such() -> None:
    text = """\
apiVersion: v1
kind: Service
metadata:
  name: web
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}
spec:
  replicas: {{ .Values.replicas }}
"""
    loaded = load_text(text, "chart/templates/deploy.yaml")
    assert names(loaded) == ["web"]
    (error,) = loaded.errors
    message = str(error)
    assert message.startswith("chart/templates/deploy.yaml:9: ")
    assert "unrendered template ({{ … }} on line 9)" in message
    assert "helm template" in message


def test_documents_that_are_not_objects() -> None:
    text = "- a\n- b\n---\njust text\n---\nmetadata: {name: x}\n---\napiVersion: v1\n---\n# nothing\n---\n"
    loaded = load_text(text, "odd.yaml")
    assert loaded.objects == []
    assert [str(e) for e in loaded.errors] == [
        "odd.yaml:1: document is a list, not a Kubernetes object (a mapping with apiVersion and kind)",
        "odd.yaml:4: document is the scalar 'just text', not a Kubernetes object (a mapping with apiVersion "
        "and kind)",
        "odd.yaml:6: not a Kubernetes object: no apiVersion and no kind",
        "odd.yaml:8: not a Kubernetes object: no kind",
    ]


@pytest.mark.timeout(20)
def test_billion_laughs_is_refused() -> None:
    lines = ['lol0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, 10):
        lines.append(f"lol{level}: &l{level} [" + ", ".join([f"*l{level - 1}"] * 10) + "]")
    bomb = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: bomb}\ndata:\n" + \
        "\n".join("  " + line for line in lines) + "\n"
    text = bomb + "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: fine}\n"
    loaded = load_text(text, "bomb.yaml")
    assert names(loaded) == ["fine"]
    (error,) = loaded.errors
    assert "aliases expand to more than 100000 nodes" in str(error)
    assert str(error).startswith("bomb.yaml:")


@pytest.mark.timeout(20)
def test_recursive_alias_and_deep_nesting_are_refused() -> None:
    loaded = load_text("apiVersion: v1\nkind: X\nself: &a [*a]\n", "loop.yaml")
    assert "alias *a refers to no anchor before it" in str(loaded.errors[0])
    loaded = load_text("[" * 1_000_000 + "]" * 1_000_000, "deep.yaml")
    assert [str(e) for e in loaded.errors] == ["deep.yaml:1: nested more than 200 levels deep; refused"]


def test_binary_and_undecodable_files(tmp_path: Path) -> None:
    (tmp_path / "image.yaml").write_bytes(b"\x7fELF\x02\x01\x01\x00\x00\x00")
    (tmp_path / "latin1.yaml").write_bytes("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: caf\xe9}\n"
                                           .encode("latin-1"))
    (tmp_path / "utf16.yaml").write_bytes("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: wide}\n"
                                          .encode("utf-16"))
    loaded = load_objects([str(tmp_path)])
    assert names(loaded) == ["wide"]
    assert [str(e) for e in loaded.errors] == [
        f"{tmp_path / 'image.yaml'}: is a binary file (NUL bytes), not a YAML or JSON manifest",
        f"{tmp_path / 'latin1.yaml'}:3: not UTF-8 text (byte 0xe9 at offset 51); binary file or another encoding",
    ]


def test_control_characters_are_a_clear_error() -> None:
    loaded = load_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: \x07bell}\n", "bell.yaml")
    (error,) = loaded.errors
    assert str(error).startswith("bell.yaml:3: ")
    assert "#x0007" in str(error)


def test_limits_bound_size_and_document_count(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: big}\ndata: {a: " + "x" * 500 + "}\n")
    loaded = load_objects([str(big)], limits=ManifestLimits(max_file_bytes=100))
    assert loaded.objects == []
    assert str(loaded.errors[0]) == f"{big}: larger than 100 bytes; refused (raise the limit to read it)"

    many = "".join(f"---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: m{i}}}\n" for i in range(5))
    loaded = load_text(many, "many.yaml", limits=ManifestLimits(max_documents=3))
    assert names(loaded) == ["m0", "m1", "m2"]
    assert str(loaded.errors[0]) == "many.yaml:14: more than 3 documents in one file; the rest is not read"

    wide = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: w}\ndata: [" + ", ".join("x" * 1 for _ in range(50)) + "]\n"
    loaded = load_text(wide, "wide.yaml", limits=ManifestLimits(max_nodes=20))
    assert "more than 20 values in one document" in str(loaded.errors[0])


@pytest.mark.timeout(20)
def test_pipes_named_explicitly_are_read_and_fifos_in_directories_skipped(tmp_path: Path) -> None:
    (tmp_path / "x.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
    os.mkfifo(tmp_path / "pipe.yaml")  # nobody writes: opening it would block forever
    loaded = load_objects([str(tmp_path)])
    assert names(loaded) == ["x"] and loaded.errors == []
    # -f <(helm template …) hands canrun a pipe path
    read_end, write_end = os.pipe()
    os.write(write_end, b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: piped}\n")
    os.close(write_end)
    try:
        loaded = load_objects([f"/proc/self/fd/{read_end}"])
    finally:
        os.close(read_end)
    assert names(loaded) == ["piped"]


TOKENS = [*"ab:- \n\t{}[],&*!|>'\"#%@`?\\0123", "---\n", "<<: ", "{{", "apiVersion: v1\nkind: Pod\n",
          "kind: CronJob\napiVersion: batch/v1\n", "spec:\n", "  containers:\n", "  - ", "image: x\n", "name: a\n",
          "  jobTemplate: ", "template: ", "command: ", "env: ", "securityContext: ", "volumes: ", "&a ", "*a "]
YAMLISH = st.lists(st.sampled_from(TOKENS), max_size=60).map("".join)


@settings(max_examples=300, deadline=None)
@given(text=YAMLISH)
def test_any_text_gives_objects_or_errors_never_an_exception(text: str) -> None:
    loaded = load_text(text, "fuzz.yaml")
    for error in loaded.errors:
        assert str(error).startswith("fuzz.yaml")
    for item in loaded.objects:
        assert isinstance(item.obj, dict) and item.source.file == "fuzz.yaml"
    result = workloads_from_load(loaded)
    assert len(result.errors) >= len(loaded.errors)


@settings(max_examples=100, deadline=None)
@given(data=st.binary(max_size=300))
def test_any_bytes_never_raise(data: bytes) -> None:
    workloads_from_load(load_text(data, "fuzz.bin"))
