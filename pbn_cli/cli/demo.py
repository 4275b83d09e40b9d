"""`pbn demo`: the whole pipeline on a synthetic painting set, in a few minutes on a laptop.

Each step runs the same app a user runs, with the argv they would type, so
its output is the output they will see; the command is printed before it
runs. Re-running the demo in the same folder skips what is done (and
resumes a killed training run).
"""

from __future__ import annotations

import shlex
import shutil
import time
from pathlib import Path
from typing import Annotated

import typer

from pbn_cli.cli.app import DeviceOpt, command


def _pick_paintings(ws: Path, seed: int) -> tuple[Path, Path, Path]:
    """Two test paintings by one unseen artist and one by another, (a, same, other), drawn with the seed: typical
    paintings, not chosen for a good answer."""
    import numpy as np

    from pbn_cli.api import Workspace

    paintings = Workspace(ws).paintings().sort_values("image_id")
    pool = paintings[paintings["split"] == "test"]
    if pool["artist"].nunique() < 2:  # a tiny demo may hold out a single artist
        pool = paintings
    rng = np.random.default_rng([seed, 17])
    counts = pool["artist"].value_counts().sort_index()
    first = rng.choice(counts[counts >= 2].index.to_numpy())
    second = rng.choice(counts.index[counts.index != first].to_numpy())
    a, same = rng.choice(pool[pool["artist"] == first]["file"].to_numpy(), 2, replace=False)
    other = rng.choice(pool[pool["artist"] == second]["file"].to_numpy())
    return Path(a), Path(same), Path(other)


def _likely(p: float) -> str:
    """A probability of the same hand in words."""
    for level, words in ((0.9, "very likely the same hand"), (0.7, "likely the same hand"),
                         (0.3, "uncertain whether it is the same hand"), (0.1, "unlikely to be the same hand")):
        if p >= level:
            return words
    return "very unlikely to be the same hand"


class _Story:
    """What the demo's compare, search and attribute steps said, in words, and why two of them may disagree."""

    def __init__(self, ws: Path, device: str):
        from pbn_cli.api import load

        self.ws = ws
        self.model = load(workspace=ws, run="demo", device=device)

    def compare(self, a: Path, b: Path, same_painter: bool) -> str:
        from pbn_cli.core.atomic import read_json
        from pbn_cli.core.runs import Run
        from pbn_cli.core.workspace import Workspace

        v = self.model.compare(a, b)
        m = read_json(Run(Workspace(self.ws).runs / "demo").eval_folder("test") / "metrics.json", "") or {}
        right = v.same_artist == same_painter
        truth = "by the same painter" if same_painter else "by two different painters"
        return (f"p(same) = {v.same_artist_probability:.2f} for two paintings {truth}: "
                f"{_likely(v.same_artist_probability)}, so the verdict is "
                f"{'right' if right else 'wrong'} here. On unseen artists the verdict is right "
                f"{m.get('verification_accuracy', float('nan')):.0%} of the time (eval's balanced accuracy), so about "
                f"one pair in {max(round(1 / max(1 - m.get('verification_accuracy', 0.9), 1e-3)), 2)} is misjudged.")

    def search_and_attribute(self, a: Path, k: int) -> str:
        vote = self.model.search(a, k, split="test").attrs["vote"]
        result = self.model.attribute(a)
        top = result.hands[0]
        voted = vote[0][0] if vote else "nobody"
        said = (f"search's vote among the {k} nearest test paintings: {voted} ({vote[0][1] if vote else 0} of {k}); "
                f"attribute: {result.answer}, because {result.reason}.")
        if voted == top.artist and not result.unknown:
            return said + " They agree."
        why = []
        if voted != top.artist:
            hands = self.model.gallery().table["artist"].nunique()
            why.append(f"search counts neighbours among the test split only, while attribute weighs every painting of "
                       f"each of the workspace's {hands} hands, a hand's paintings as a whole: a "
                       "few near neighbours can outvote a hand that is closer on the whole")
        if result.unknown:
            why.append("attribute answers 'unknown hand' because no hand fits this painting clearly better than a "
                       "hand it never saw would by chance; a vote always names someone")
        return said + " Why they differ: " + "; and ".join(why) + "."


class _Steps:
    """Prints each step's heading and runs its commands through the app; stops at the first failure."""

    def __init__(self, total: int):
        self.n, self.total = 0, total

    def heading(self, text: str) -> None:
        from pbn_cli.cli import console

        self.n += 1
        console.out.print(f"\n[bold cyan]── {self.n}/{self.total} {text}[/]", highlight=False)

    def say(self, text: str) -> None:
        from pbn_cli.cli import console

        console.out.print(f"[italic]  → {text}[/]", highlight=False)

    def run(self, *argv) -> None:
        import typer.main

        from pbn_cli.cli import console
        from pbn_cli.cli.app import app

        args = [str(a) for a in argv]
        console.out.print(f"[dim]$ pbn {shlex.join(args)}[/]", highlight=False)
        code = typer.main.get_command(app).main(args, prog_name="pbn", standalone_mode=False)
        if code:  # the command has printed its one-line error
            raise typer.Exit(code)


def run_demo(folder: Path, artists: int, paintings: int, epochs: int, device: str, seed: int) -> None:
    from pbn_cli.cli import console
    from pbn_cli.core.errors import InputError
    from pbn_cli.core.runs import Run
    from pbn_cli.core.workspace import Workspace

    if artists < 6 or paintings < 3 or epochs < 1:
        raise InputError("the demo needs --artists >= 6, --paintings >= 3 and --epochs >= 1")
    start = time.monotonic()
    data, ws = folder / "data", folder / "workspace"
    steps = _Steps(10)
    w = ("-w", ws)
    steps.heading(f"synth: {artists * paintings} paintings by {artists} synthetic artists in Kaggle's layout")
    if (data / "train_info.csv").exists():
        console.out.print(f"synth: {data / 'train_info.csv'} exists, reusing it")
    else:
        steps.run("synth", data, "--artists", artists, "--paintings", paintings, "--seed", seed,
                  "--min-size", 256, "--max-size", 720)
    steps.heading("ingest: the CSV and every image's header")
    steps.run("ingest", data / "train_info.csv", *w)
    steps.heading("clean, split: drop what cannot be learned from; hold out unseen artists")
    steps.run("clean", *w)
    steps.run("split", "--seed", seed, *w)
    steps.heading("resize: every painting decoded once into a 256x256 cache")
    steps.run("resize", *w)

    steps.heading(f"train: a Siamese CNN (triplet loss), quick preset, {epochs} epochs")
    run = Run(Workspace(ws).runs / "demo")
    resume = run.last.exists()
    if run.folder.exists() and not resume:
        shutil.rmtree(run.folder)  # killed before its first checkpoint: start it again
    steps.run("train", "--preset", "quick", "--run", "demo", "--epochs", epochs, "--seed", seed, "--device", device,
              *(["--resume"] if resume else []), *w)

    steps.heading("eval: unseen artists, beside a colour-histogram baseline")
    steps.run("eval", "--baseline", "color-hist", "--device", device, *w)
    steps.run("eval", "--run", "demo", "--device", device, *w)

    a, same, other = _pick_paintings(ws, seed)
    story = _Story(ws, device)
    steps.heading(f"compare: two paintings by one unseen artist ({a.name}, {same.name}), then another artist's "
                  "(drawn at random with the seed: typical, not chosen)")
    steps.run("compare", a, same, "--run", "demo", "--sheet", folder / "compare-same.png", "--evidence",
              folder / "compare-evidence.png", "--device", device, *w)
    steps.say(story.compare(a, same, True))
    steps.run("compare", a, other, "--run", "demo", "--sheet", folder / "compare-different.png", "--device", device, *w)
    steps.say(story.compare(a, other, False))
    steps.heading(f"search: the nearest paintings to {a.name} among the unseen artists'")
    steps.run("search", a, "-k", 8, "--split", "test", "--run", "demo", "--sheet", folder / "search.png",
              "--device", device, *w)
    steps.heading(f"attribute: who painted {a.name}? Every artist of the workspace is a known hand (its own painting "
                  "left out)")
    steps.run("attribute", a, "--run", "demo", "--sheet", folder / "attribute.png", "--evidence",
              folder / "attribute-evidence.png", "--device", device, *w)
    steps.say(story.search_and_attribute(a, 8))

    steps.heading("done")
    report = run.eval_folder("test") / "report.md"
    minutes, seconds = divmod(int(time.monotonic() - start), 60)
    console.out.print(
        f"demo finished in {minutes} min {seconds:02d} s.\n"
        f"  report:   {report} (metrics, ROC, distances, the model's mistakes, a map of the test paintings)\n"
        f"  pictures: {folder / 'compare-same.png'}, {folder / 'compare-evidence.png'}, {folder / 'compare-different.png'}, "
        f"{folder / 'search.png'}, {folder / 'attribute.png'}, {folder / 'attribute-evidence.png'}\n"
        f"  next:     pbn status -w {ws};  pbn runs -w {ws};  pbn compare A B -w {ws}",
        highlight=False,
    )


@command
def demo(
    folder: Annotated[Path, typer.Argument(metavar="DIR", help="Folder for the data, the workspace and the pictures.")] = Path("pbn-demo"),
    artists: Annotated[int, typer.Option(help="Synthetic artists.")] = 40,
    paintings: Annotated[int, typer.Option(help="Paintings per artist.")] = 12,
    epochs: Annotated[int, typer.Option(help="Training epochs.")] = 20,
    device: DeviceOpt = "auto",
    seed: Annotated[int, typer.Option(help="Seed of the paintings, the split and the training.")] = 0,
) -> None:
    """The whole pipeline on synthetic paintings, in about 2 minutes on a laptop CPU.

    synth -> ingest -> clean -> split -> resize -> train (quick preset) ->
    eval beside the colour baseline -> compare (with its evidence) -> search
    -> attribute, printing each command as it runs. Run it again to skip
    what is done.

    Example: pbn demo pbn-demo
    """
    run_demo(folder, artists, paintings, epochs, device, seed)
