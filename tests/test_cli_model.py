"""Task files with a [model] table (MLP, CNN, transformer, explicit layers) and a [base];
`polnet model sample|eval` on the weights a task produced."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from cli.task_spec import build_spec, build_task, read_spec_file
from node.compute.checkpoints import encode_weights
from node.compute.trainer import Run
from protocol.errors import ConfigError
from protocol.pol.memory import peak_memory_mb
from protocol.pol.merkle import leaf_hash
from protocol.pol.spec import SPEC_V1, SPEC_VERSION, BaseKind, LayerKind, LossKind

runner = CliRunner()
EXAMPLES = Path(__file__).resolve().parent.parent / "docs" / "examples"
TINY_LM = """dataset = "notes.txt"
val_fraction = 0.2
steps = 64
checkpoint_interval = 1
batch_size = 4
optimizer = "adamw"
lr = 0.005
[model]
kind = "transformer"
blocks = 1
d_model = 16
heads = 2
context = 16
"""


def invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout + result.stderr


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.mark.parametrize(
    ("name", "first", "loss"),
    [
        ("mlp.toml", LayerKind.LINEAR, LossKind.CROSS_ENTROPY),
        ("cnn.toml", LayerKind.CONV2D, LossKind.CROSS_ENTROPY),
        ("transformer.toml", LayerKind.EMBEDDING, LossKind.NEXT_TOKEN),
        ("layers.toml", LayerKind.CONV2D, LossKind.CROSS_ENTROPY),
    ],
)
def test_every_example_builds_a_version_2_task_sized_for_its_workers(
    name: str, first: LayerKind, loss: LossKind
) -> None:
    built = build_task(read_spec_file(EXAMPLES / name), EXAMPLES)
    spec = built.spec
    assert spec.version == SPEC_VERSION and spec.layers[0].kind is first and spec.loss is loss
    assert spec.val_size > 0 and built.submit.min_memory_mb == peak_memory_mb(spec)
    if name == "cnn.toml":
        assert any(layer.kind is LayerKind.MAXPOOL2D for layer in spec.layers)


def test_the_transformer_example_is_the_issues_model() -> None:
    spec = build_task(read_spec_file(EXAMPLES / "transformer.toml"), EXAMPLES).spec
    blocks = [layer for layer in spec.layers if layer.kind is LayerKind.TRANSFORMER_BLOCK]
    assert len(blocks) == 4 and blocks[0].in_size == 128 and blocks[0].heads == 4
    assert spec.input_shape == (128,) and spec.layers[-1].kind is LayerKind.LM_HEAD_TIED


def test_a_file_without_a_model_table_is_still_a_version_1_task(tmp_path: Path) -> None:
    text = 'dataset = "synthetic"\nhidden = [8]\nsteps = 64\ncheckpoint_interval = 1\n'
    spec, _, _ = build_spec(read_spec_file(write(tmp_path, "t.toml", text)), tmp_path)
    assert spec.version == SPEC_V1


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('[model]\nkind = "mlp"\nwidths = [3]\n', "unknown key 'widths' in [model]"),
        ('[model]\nkind = "rnn"\n', "kind must be one of"),
        ('[model]\nkind = "transformer"\nd_model = 8\nheads = 2\ncontext = 4\nblocks = 1\n', "text dataset"),
        ('[model]\nkind = "cnn"\nchannels = [4]\n', "needs images"),
        ('hidden = [4]\n[model]\nkind = "mlp"\n', "hidden belongs in the [model] table"),
        (
            '[model]\nkind = "layers"\nlayers = [{type = "linear", in_size = 64, out = 10}]\n',
            "unknown key 'out' in [model.layers[0]]",
        ),
        ('[model]\nkind = "layers"\nlayers = [{type = "lstm"}]\n', "type must be one of"),
        (
            '[model]\nkind = "layers"\nlayers = [{type = "linear", in_size = 64, out_size = 9}]\n',
            "model output",
        ),
        ('val_fraction = 0.9\n[model]\nkind = "mlp"\n', "val_fraction must be"),
        ('[model]\nkind = "mlp"\n[base]\nweight = "w.safetensors"\n', "unknown key 'weight' in [base]"),
        ('[model]\nkind = "mlp"\n[base]\nweights = "none.safetensors"\n', "no such file"),
    ],
)
def test_bad_model_tables_name_what_is_wrong(tmp_path: Path, body: str, message: str) -> None:
    head = 'dataset = "digits"\nsteps = 64\ncheckpoint_interval = 1\n'
    code, out = invoke("task", "submit", str(write(tmp_path, "t.toml", head + body)), "-d", str(tmp_path))
    assert code == 2 and message in out


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Run]:
    d = tmp_path_factory.mktemp("lm")
    (d / "notes.txt").write_text("def add(a, b):\n    return a + b\n" * 30)
    spec_file = write(d, "lm.toml", TINY_LM)
    spec, data, _ = build_spec(read_spec_file(spec_file), d)
    run = Run(spec, data)
    run.train()
    weights = d / "w.safetensors"
    weights.write_bytes(encode_weights(run.state_at(spec.steps).params))
    return spec_file, weights, run


def test_model_sample_writes_seeded_text_from_the_weights(trained: tuple[Path, Path, Run]) -> None:
    spec_file, weights, _ = trained
    args = ["model", "sample", str(weights), "--spec", str(spec_file), "--prompt", "def ", "-n", "40"]
    code, out = invoke(*args, "--seed", "5")
    assert code == 0 and out.startswith("def ")
    assert invoke(*args, "--seed", "5")[1] == out
    code, doc = invoke(*args, "--json")
    assert code == 0 and json.loads(doc)["text"].startswith("def ")


def test_model_eval_reports_held_out_loss_in_bits_per_byte(trained: tuple[Path, Path, Run]) -> None:
    spec_file, weights, _ = trained
    code, out = invoke("model", "eval", str(weights), "--spec", str(spec_file), "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["split"] == "val" and 0 < doc["bits_per_byte"] < 8.0 and 0 <= doc["accuracy"] <= 1


def test_model_commands_refuse_weights_of_another_model(
    tmp_path: Path, trained: tuple[Path, Path, Run]
) -> None:
    spec_file, _, run = trained
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(encode_weights(run.state_at(0).params[:-1]))
    code, out = invoke("model", "sample", str(bad), "--spec", str(spec_file))
    assert code == 2 and "parameters" in out
    code, out = invoke("model", "eval", str(tmp_path / "none.safetensors"), "--spec", str(spec_file))
    assert code == 2 and "not found" in out
    code, out = invoke("model", "eval", str(bad), "--spec", str(spec_file), "--split", "test")
    assert code == 2 and "--split" in out


def test_a_base_table_makes_a_fine_tuning_task(tmp_path: Path, trained: tuple[Path, Path, Run]) -> None:
    _, weights, run = trained
    (tmp_path / "notes.txt").write_text("other text to fine tune on. " * 40)
    (tmp_path / "w.safetensors").write_bytes(weights.read_bytes())
    uploaded = TINY_LM + '[base]\nweights = "w.safetensors"\n'
    built = build_task(read_spec_file(write(tmp_path, "ft.toml", uploaded)), tmp_path)
    assert built.spec.base is not None and built.spec.base.kind is BaseKind.UPLOADED
    assert built.base_blob == weights.read_bytes()
    leaves = run.leaves()
    from protocol.pol.merkle import inclusion_proof

    proof = inclusion_proof([leaf_hash(x) for x in leaves], len(leaves) - 1)
    final = leaves[-1]
    proven = uploaded + (
        f'proof_root = "{run.root().hex()}"\ncheckpoints = {len(leaves)}\n'
        f"proof = [{', '.join(repr(h.hex()) for h in proof.path)}]\n"
        f'final_leaf = {{step = {final.step}, optimizer_hash = "{final.optimizer_hash.hex()}", '
        f"data_order_seed = {final.data_order_seed}}}\n"
    ).replace("'", '"')
    spec = build_task(read_spec_file(write(tmp_path, "pr.toml", proven)), tmp_path).spec
    assert spec.base is not None and spec.base.kind is BaseKind.PROVEN
    wrong = proven.replace(f"checkpoints = {len(leaves)}", f"checkpoints = {len(leaves) + 1}")
    with pytest.raises(ConfigError, match="final checkpoint"):
        build_task(read_spec_file(write(tmp_path, "bad.toml", wrong)), tmp_path)
