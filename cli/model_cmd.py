"""`polnet model sample|eval`: use the weights a task produced.

Both read the task file the model was trained from (`--spec`, for its architecture and
dataset) and a weights file as `polnet task result` writes it (`w.0000`, ...; a full
checkpoint also works, its optimizer state is ignored). Every tensor's name, shape and
dtype is checked against the spec before anything runs; nothing is unpickled.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from cli.output import emit_json, operator_errors, stdout
from protocol.errors import ConfigError, PolnetError

app = typer.Typer(help="Sample from and evaluate trained models.", no_args_is_help=True)

SpecOpt = typer.Option(..., "--spec", "-s", help="The task file the weights were trained from.")
JsonOpt = typer.Option(False, "--json", help="Print a JSON object.")
#: A weights file is refused beyond the spec's own size times this (headers, slack).
WEIGHTS_SLACK = 2
MAX_PROMPT_CHARS = 4096


def _load(weights: Path, spec_file: Path) -> tuple[Any, Any, Any]:
    """(spec, dataset, State of the weights)."""
    from cli.task_spec import build_spec, read_spec_file
    from node.compute.checkpoints import checkpoint_bytes, decode_weights
    from node.compute.trainer import State

    spec, data, _ = build_spec(read_spec_file(spec_file), spec_file.resolve().parent)
    if not weights.is_file():
        raise ConfigError(f"{weights}: weights file not found")
    cap = WEIGHTS_SLACK * checkpoint_bytes(spec) + (1 << 20)
    with weights.open("rb") as f:
        blob = f.read(cap + 1)
    if len(blob) > cap:
        raise ConfigError(f"{weights}: larger than any checkpoint of this spec ({cap} bytes)")
    try:
        params = decode_weights(spec, blob)
    except PolnetError as exc:  # the operator's file: a fault in it is bad input (exit 2)
        raise ConfigError(f"{weights}: {exc}") from None
    return spec, data, State(params, [])


@app.command()
def sample(
    weights: Path = typer.Argument(..., help="Trained weights (.safetensors)."),
    spec_file: Path = SpecOpt,
    prompt: str = typer.Option("", "--prompt", "-p", help="Text to continue."),
    n_bytes: int = typer.Option(200, "--bytes", "-n", min=0, max=65_536, help="Bytes to write."),
    seed: int = typer.Option(0, "--seed", min=0, max=2**62, help="Sampling seed (same seed, same text)."),
    temperature: float = typer.Option(0.8, "--temperature", "-t", min=0.01, max=10.0),
    as_json: bool = JsonOpt,
) -> None:
    """Write text from a trained language model, continuing --prompt."""
    from node.compute import lm

    with operator_errors():
        if len(prompt) > MAX_PROMPT_CHARS:
            raise ConfigError(f"--prompt is longer than {MAX_PROMPT_CHARS} characters")
        spec, _, state = _load(weights, spec_file)
        text = lm.sample(spec, state, prompt, n_bytes, seed=seed, temperature=temperature)
    if as_json:
        emit_json({"prompt": prompt, "text": text, "seed": seed, "bytes": n_bytes})
    else:
        typer.echo(text)


@app.command(name="eval")
def evaluate(
    weights: Path = typer.Argument(..., help="Trained weights (.safetensors)."),
    spec_file: Path = SpecOpt,
    split: str = typer.Option("val", "--split", help="val (the held-out tail) or train."),
    as_json: bool = JsonOpt,
) -> None:
    """Report loss and accuracy of the weights on the task's dataset split."""
    from node.compute.datasets import TextDataset, unigram_bits_per_byte
    from node.compute.evaluate import SPLITS
    from node.compute.evaluate import evaluate as run_eval

    with operator_errors():
        if split not in SPLITS:
            raise ConfigError(f"--split must be one of {', '.join(SPLITS)}")
        spec, data, state = _load(weights, spec_file)
        if split == "val" and spec.val_size == 0:
            raise ConfigError("the task holds nothing out (val_fraction = 0): use --split train")
        ev = run_eval(spec, data, state, split)
        doc: dict[str, Any] = {"split": ev.split, "loss": ev.loss, "accuracy": ev.accuracy, "count": ev.count}
        if isinstance(data, TextDataset):
            doc["bits_per_byte"] = ev.bits_per_byte
            doc["unigram_bits_per_byte"] = unigram_bits_per_byte(data.split(spec, ev.split))
    if as_json:
        emit_json(doc)
        return
    line = f"{doc['split']}: loss {ev.loss:.4f}, accuracy {ev.accuracy:.3f} over {ev.count}"
    if "bits_per_byte" in doc:
        line += f" tokens; {doc['bits_per_byte']:.3f} bits/byte (unigram {doc['unigram_bits_per_byte']:.3f})"
    else:
        line += " samples"
    stdout.print(line)
