"""What `neurflow extract` leaves on disk and prints: circuit.json, exemplar PNGs, purity tables."""

from __future__ import annotations

import csv
import io
import json
import shutil
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

from graphmodel.records import Circuit, CircuitFileError, write_atomically
from ingest.core.patches import PatchSet
from ingest.core.purity import base_rates

OWNED = ("circuit.json", "patches", "purity.tsv")


class OutputError(ValueError):
    """An output folder that cannot take this run's results; the message says which and why."""


def check_out_dir(out: Path) -> None:
    """Before any work: the folder can be created and written (a read-only --out is found now, not
    after the whole computation)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".neurflow-probe-"):
            pass
    except OSError as exc:
        raise OutputError(
            f"cannot write to the output folder {out}: {exc.strerror or exc}; choose a folder you can "
            "write (--out)"
        ) from None


def claim_out_dir(out: Path, run_id: str, *, replace: bool = False) -> list[str]:
    """Refuse a folder that holds another run's results: its circuit.json, patches and purity table
    would be mixed with this run's. A folder of the same run (a re-run) is written again. With
    `replace` (the demo, which owns its folder), another run's results are removed instead; the
    paths removed are returned."""
    conflict = _conflict(out, run_id)
    if conflict is None:
        return []
    if not replace:
        raise OutputError(conflict)
    removed = []
    for name in OWNED:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
        else:
            continue
        removed.append(str(path))
    return removed


def _conflict(out: Path, run_id: str) -> str | None:
    """Why `out` holds results that are not this run's, or None when it holds none or its own."""
    circuit_file = out / "circuit.json"
    if circuit_file.exists():
        try:
            other = Circuit.load(circuit_file)
        except CircuitFileError as exc:
            return (
                f"--out {out} holds a circuit.json that cannot be read ({exc}); remove the folder's "
                "circuit.json, patches/ and purity.tsv, or choose an empty folder"
            )
        if other.run_id == run_id:
            return None
        return (
            f"--out {out} holds the results of another run ({other.run_id}, class "
            f"{other.class_name or other.class_index}); choose an empty folder, or remove that run's "
            "circuit.json, patches/ and purity.tsv first"
        )
    leftovers = [name for name in OWNED[1:] if (out / name).exists() and _not_empty(out / name)]
    if leftovers:
        return (
            f"--out {out} holds {' and '.join(leftovers)} of an earlier extraction without its circuit.json; "
            "choose an empty folder, or remove them first"
        )
    return None


def _not_empty(path: Path) -> bool:
    return path.is_file() or any(path.iterdir())


def save_outputs(circuit: Circuit, patches: PatchSet, out: Path) -> dict[str, Path]:
    """Write the exemplar PNGs, the purity table and, last, circuit.json, each atomically: a full
    disk or a crash leaves the earlier files whole."""
    out.mkdir(parents=True, exist_ok=True)
    claim_out_dir(out, circuit.run_id)  # a caller that replaces another run has done so by now
    paths = {"circuit": out / "circuit.json"}
    exemplars = {p for n in circuit.neurons for p in n.concept}
    patch_dir = out / "patches"
    patch_dir.mkdir(exist_ok=True)
    index = {r.patch_id: i for i, r in enumerate(patches.records)}
    for pid in sorted(exemplars):
        target = patch_dir / f"{pid}.png"
        if not target.exists():
            pixels = patches.pixels[index[pid]].permute(1, 2, 0).numpy().astype(np.uint8)
            buffer = io.BytesIO()
            Image.fromarray(pixels).save(buffer, format="PNG")
            write_atomically(target, buffer.getvalue())
    paths[f"exemplar patches ({len(exemplars)})"] = patch_dir
    rows = circuit.stats.get("purity")
    if rows:
        paths["purity table"] = out / "purity.tsv"
        text = io.StringIO(newline="")
        writer = csv.writer(text, delimiter="\t")
        writer.writerow(["layer", "kind", "id", "neurons", "size", "concept", "purity", "shares"])
        for r in rows:
            writer.writerow(
                [
                    r["layer"],
                    r["kind"],
                    r["id"],
                    " ".join(map(str, r["neurons"])),
                    r["size"],
                    r["concept"],
                    r["purity"],
                    json.dumps(r["shares"]),
                ]
            )
        write_atomically(paths["purity table"], text.getvalue().encode())
    circuit.save(paths["circuit"])
    return paths


def tau_flags(circuit: Circuit) -> dict[str, float]:
    """The layers below the top where the run's τ keeps half the neurons or more (name -> share)."""
    from ingest.core.tau import parse_tau, wide_tau_layers

    try:
        rule = parse_tau(circuit.params.get("tau", ""))
    except ValueError:
        return {}
    return wide_tau_layers(rule, {layer.name: layer.width for layer in circuit.layers if layer.depth > 0})


def tau_lines(circuit: Circuit) -> list[str]:
    """`wide_tau_lines` for a finished circuit."""
    from ingest.core.tau import parse_tau, wide_tau_lines

    flags = tau_flags(circuit)
    if not flags:
        return []
    widths = {layer.name: layer.width for layer in circuit.layers if layer.name in flags}
    return wide_tau_lines(parse_tau(circuit.params["tau"]), widths)


def circuit_summary(circuit: Circuit, *, semantic_groups: bool = True) -> dict:
    """What `summary_lines` prints, as data (`--json`): the run, per-layer counts and timings, and
    (with ground truth) the base rates and the purity rows."""
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for n in circuit.neurons:
        counts[n.layer]["neurons"] += 1
    for sg in circuit.semantic_groups:
        counts[sg.layer]["semantic_groups"] += 1
    for g in circuit.neuron_groups:
        counts[g.layer]["neuron_groups"] += 1
    for e in circuit.hyperedges:
        counts[e.child_layer]["hyperedges"] += 1
    timings = circuit.stats.get("layers", {})
    purity = circuit.stats.get("purity") or []
    layers = []
    for layer in circuit.layers:
        ng = [r["purity"] for r in purity if r["layer"] == layer.name and r["kind"] == "neuron_group"]
        layers.append(
            {
                "name": layer.name,
                "width": layer.width,
                **{
                    k: counts[layer.name][k]
                    for k in ("neurons", "semantic_groups", "neuron_groups", "hyperedges")
                },
                "pairs": timings.get(layer.name, {}).get("pairs", 0),
                "seconds": timings.get(layer.name, {}).get("seconds", 0.0),
                "neuron_group_purity": float(np.mean(ng)) if ng else None,
            }
        )
    shown = purity if semantic_groups else [r for r in purity if r["kind"] == "neuron_group"]
    return {
        "wide_tau_layers": tau_flags(circuit),
        "run_id": circuit.run_id,
        "model_id": circuit.model_id,
        "class_index": circuit.class_index,
        "class_name": circuit.class_name,
        "params": {k: circuit.params.get(k) for k in ("tau", "k", "steps")},
        "patches": len(circuit.patches),
        "layers": layers,
        "base_rates": base_rates(circuit) if purity else {},
        "purity": shown,
        "purity_rows_left_out": len(purity) - len(shown),
    }


def summary_lines(circuit: Circuit, *, semantic_groups: bool = True) -> list[str]:
    """A per-layer summary table, then (with ground truth) the purity of every group; without
    ``semantic_groups`` only the neuron groups' (a few dozen rows instead of hundreds)."""
    summary = circuit_summary(circuit, semantic_groups=semantic_groups)
    name_width = max([14, *(len(layer.name) + 1 for layer in circuit.layers)])
    lines = [
        f"run {circuit.run_id}  model {circuit.model_id}  class {circuit.class_index}"
        f"{f' ({circuit.class_name})' if circuit.class_name else ''}  "
        f"tau {circuit.params.get('tau')}  k {circuit.params.get('k')}  "
        f"steps {circuit.params.get('steps')}  patches {len(circuit.patches)}",
        "",
        f"{'layer':<{name_width}}{'width':>7}{'neurons':>9}{'sem.grp':>9}{'nrn.grp':>9}"
        f"{'edges↑':>9}{'pairs':>8}{'sec':>8}{'NG purity':>11}",
    ]
    for row in summary["layers"]:
        mean = row["neuron_group_purity"]
        lines.append(
            f"{row['name']:<{name_width}}{row['width']:>7}{row['neurons']:>9}{row['semantic_groups']:>9}"
            f"{row['neuron_groups']:>9}{row['hyperedges']:>9}{row['pairs']:>8}"
            f"{row['seconds']:>8.1f}{f'{mean:.2f}' if mean is not None else '-':>11}"
        )
    shown, hidden = summary["purity"], summary["purity_rows_left_out"]
    if shown or hidden:
        rates = ", ".join(f"{c} {v:.2f}" for c, v in summary["base_rates"].items())
        lines += [
            "",
            "ground-truth purity (share of a group's patches containing its dominant concept)",
            f"base rates over all {len(circuit.patches)} patches: {rates}",
        ]
        for layer in circuit.layer_names():
            rows = [r for r in shown if r["layer"] == layer]
            lines.append(f"-- {layer}")
            for r in rows:
                kind = "NG" if r["kind"] == "neuron_group" else "SG"
                tail = ", ".join(f"{c} {s:.2f}" for c, s in list(r["shares"].items())[:4])
                who = r["id"].split("/", 2)[-1]
                lines.append(
                    f"   {kind} {who:<22} n={r['size']:<4} {r['concept'] or '-':<9} "
                    f"{r['purity']:.2f}   [{tail}]"
                )
        if hidden:
            lines.append(
                f"({hidden} semantic-group rows not shown: -v, or `neurflow show` on the circuit.json)"
            )
    return lines + tau_lines(circuit)
