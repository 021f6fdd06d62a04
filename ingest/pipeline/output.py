"""What `neurflow extract` leaves on disk and prints: circuit.json, exemplar PNGs, purity tables."""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

from graphmodel.records import Circuit
from ingest.core.patches import PatchSet
from ingest.core.purity import base_rates


def save_outputs(circuit: Circuit, patches: PatchSet, out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {"circuit": out / "circuit.json"}
    circuit.save(paths["circuit"])
    exemplars = {p for n in circuit.neurons for p in n.concept}
    patch_dir = out / "patches"
    patch_dir.mkdir(exist_ok=True)
    index = {r.patch_id: i for i, r in enumerate(patches.records)}
    for pid in sorted(exemplars):
        target = patch_dir / f"{pid}.png"
        if not target.exists():
            pixels = patches.pixels[index[pid]].permute(1, 2, 0).numpy().astype(np.uint8)
            Image.fromarray(pixels).save(target)
    paths[f"exemplar patches ({len(exemplars)})"] = patch_dir
    rows = circuit.stats.get("purity")
    if rows:
        paths["purity table"] = out / "purity.tsv"
        with paths["purity table"].open("w", newline="") as fh:
            writer = csv.writer(fh, delimiter="\t")
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
    return paths


def summary_lines(circuit: Circuit) -> list[str]:
    """A per-layer summary table, then (with ground truth) the purity of every group."""
    by_layer: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for n in circuit.neurons:
        by_layer[n.layer]["neurons"] += 1
    for sg in circuit.semantic_groups:
        by_layer[sg.layer]["sgs"] += 1
    for g in circuit.neuron_groups:
        by_layer[g.layer]["ngs"] += 1
    for e in circuit.hyperedges:
        by_layer[e.child_layer]["hyper"] += 1
    timings = circuit.stats.get("layers", {})
    purity = circuit.stats.get("purity") or []
    lines = [
        f"run {circuit.run_id}  model {circuit.model_id}  class {circuit.class_index}"
        f"{f' ({circuit.class_name})' if circuit.class_name else ''}  "
        f"tau {circuit.params.get('tau')}  k {circuit.params.get('k')}  "
        f"steps {circuit.params.get('steps')}  patches {len(circuit.patches)}",
        "",
        f"{'layer':<14}{'width':>7}{'neurons':>9}{'sem.grp':>9}{'nrn.grp':>9}"
        f"{'edges↑':>9}{'pairs':>8}{'sec':>8}{'NG purity':>11}",
    ]
    for layer in circuit.layers:
        stats = by_layer[layer.name]
        t = timings.get(layer.name, {})
        ng_purity = [r["purity"] for r in purity if r["layer"] == layer.name and r["kind"] == "neuron_group"]
        mean_purity = f"{np.mean(ng_purity):.2f}" if ng_purity else "-"
        lines.append(
            f"{layer.name:<14}{layer.width:>7}{stats['neurons']:>9}{stats['sgs']:>9}"
            f"{stats['ngs']:>9}{stats['hyper']:>9}{t.get('pairs', 0):>8}"
            f"{t.get('seconds', 0):>8.1f}{mean_purity:>11}"
        )
    if purity:
        rates = ", ".join(f"{c} {v:.2f}" for c, v in base_rates(circuit).items())
        lines += [
            "",
            "ground-truth purity (share of a group's patches containing its dominant concept)",
            f"base rates over all {len(circuit.patches)} patches: {rates}",
        ]
        for layer in circuit.layer_names():
            rows = [r for r in purity if r["layer"] == layer]
            lines.append(f"-- {layer}")
            for r in rows:
                kind = "NG" if r["kind"] == "neuron_group" else "SG"
                tail = ", ".join(f"{c} {s:.2f}" for c, s in list(r["shares"].items())[:4])
                who = r["id"].split("/", 2)[-1]
                lines.append(
                    f"   {kind} {who:<22} n={r['size']:<4} {r['concept'] or '-':<9} "
                    f"{r['purity']:.2f}   [{tail}]"
                )
    return lines
