"""``python -m bench COMMAND [options]``: the benchmarks' one entry point (``--help`` after a command
for its options). With no command, the list of commands."""

from __future__ import annotations

import importlib
import sys

# name: (module, what it measures). Each module's ``main(argv)`` parses the command's options.
COMMANDS: dict[str, tuple[str, str]] = {
    "matrix": ("bench.matrix", "the attack x poison-rate matrix on Fashion-MNIST, ART beside it (1-2 h)"),
    "rescore": ("bench.rescore", "score finished runs again with today's detectors: same quarantine?"),
    "speed": ("bench.speed", "detector suite and ART on one run's 60k features, timed"),
    "art": ("bench.art_compare", "one red-team run's features through ART's defences and ours"),
    "sources": ("bench.sources", "naming the poisoned supplier among 10 (about 25 min)"),
    "review": ("bench.review_ttfb", "the review page's time to first byte, 10,000 quarantined"),
    "screenshots": ("bench.screenshots", "a screenshot of each review page into docs/screenshots/ (Chromium)"),
    "orchestration": ("bench.orchestration", "what the Prefect flow adds to a run of the digits demo"),
    "digits-demo": ("bench.digits_demo", "the built-in default over red-team seeds and torch threads"),
    "fashion-mnist": ("bench.fashion_mnist", "the first Fashion-MNIST BadNets runs (clean, 1, 5, 10 %)"),
    "compare-runs": ("bench.compare_runs", "two data folders' runs (two releases), compared sample for sample"),
    "robustness": ("bench.robustness", "kill -9 points, bad inputs, and 'sanitize verify' on a large home"),
    "transfer": ("bench.transfer", "the transfer suite: datasets x attacks x rates and randomised attacks, ART beside"),
    "timing": ("bench.timing", "a whole colour run's wall time, all stages (the 10,200-image icons by default)"),
    "datasets": ("bench.datasets", "build the transfer suite's datasets: icons, emoji, shapes, fmnist-colour"),
}
# Probes served one investigation each (bench/RESULTS.md says which); kept runnable.
PROBES: dict[str, tuple[str, str]] = {
    "asr-floor": ("bench.probes.asr_floor", "how much of each cell's ASR is the trigger"),
    "warp-floor": ("bench.probes.warp_floor", "WaNet's floor on clean-data models, unseen warping fields"),
    "retrain-recipe": ("bench.probes.retrain_recipe", "retrain finished cells' clean models with a recipe"),
    "pixel-neighbours": ("bench.probes.pixel_neighbours", "what the pixels say about each sample's label"),
    "spectre-check": ("bench.probes.spectre_check", "SPECTRE's rate-free threshold on finished runs"),
    "colour-model": ("bench.probes.colour_model", "the CPU's colour model: seconds per epoch, accuracy"),
    "neighbour-classes": (
        "bench.probes.neighbour_classes",
        "input neighbours' class test on finished runs, old rule beside",
    ),
    "old-code": ("bench.probes.old_code", "a finished run scored by an older commit's detectors"),
    "knn-recall": ("bench.probes.knn_recall", "the approximate k-NN search's recall and time on 60k rows"),
    "detect-runs": ("bench.probes.detect_runs", "suite cells run without retraining, then rescored"),
    "learnt-late": ("bench.probes.learnt_late", "do the poisons of a draw that did not take come last in training?"),
    "neighbour-levels": (
        "bench.probes.neighbour_levels",
        "input neighbours' class test at lower disagreement levels, clean data and draws",
    ),
    "heldout-clean": ("bench.probes.heldout_clean", "clean runs on builds of the suite's datasets at other seeds"),
    "trigger-holdout": ("bench.probes.trigger_holdout", "does the learnt trigger hold on seeds it was not trained on"),
}


def usage() -> str:
    width = max(map(len, [*COMMANDS, *PROBES])) + 8
    lines = [(__doc__ or "").strip(), "", "commands:"]
    lines += [f"  {name:{width}} {what}" for name, (_, what) in COMMANDS.items()]
    lines += ["", "probes (python -m bench probe NAME, or NAME alone):"]
    lines += [f"  probe {name:{width - 6}} {what}" for name, (_, what) in PROBES.items()]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if argv[:1] == ["probe"]:
        argv = argv[1:]
        table = PROBES
    else:
        table = {**COMMANDS, **PROBES}
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, *rest = argv
    if name not in table:
        print(f"python -m bench: no command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    # Only the chosen command's module: the others load torch, ART or Prefect for nothing.
    importlib.import_module(table[name][0]).main(rest)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
