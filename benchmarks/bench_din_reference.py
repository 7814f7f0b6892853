"""DIN training per CPU-second: the official RecFlow pipeline's style against stcrank's, on the same data and threads.

**Reference**, written from the published description of the official code (``rank/dataset.py`` and
``rank/models.py`` of github.com/RecFlow-ICLR/RecFlow): a map-style ``torch.utils.data.Dataset`` over a day's
``realshow`` Feather file (read whole into a 2-d array), whose ``__getitem__`` builds one sample in Python: the
request and upload times through ``time.localtime``, the ids shifted by one, the 50 behaviours looked up in the
day's ``seq_effective_50_dict`` by request id; PyTorch's default collate; and a DIN of the same shape written the
straightforward way: one embedding table per feature, the attention MLP on the concatenation ``[behaviour;
target]`` at every position of every row, the tower on the 21 concatenated embeddings. The sequence pickle is read
with stcrank's restricted unpickler (never plain ``pickle.load``).

**stcrank**: :class:`~stcrank.tasks.RankingTask` with :class:`~stcrank.models.din.DIN` on the imported store
through :class:`~stcrank.data.recflow.ranking_data.RecFlowRankingDataModule`, with the day's exposures shuffled
one by one (as the reference) and by whole requests (``group_requests``).

Both train with batch 1024, Adam (lr 1e-2) and BCE, on the same days, with the same torch threads, and with no
DataLoader worker processes, so that the process's CPU time (``time.process_time``) covers all the work. A day's
one-off load (Feather and pickle; the store's day) is timed apart. Prints one JSON object: samples per CPU-second
and per wall-clock second of each pipeline, and the ratios stcrank / reference.

    python benchmarks/bench_din_reference.py [--workdir DIR] [--users 600] [--steps 30] [--threads N]
        [--device cpu|cuda] [--load idle|busy|both]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.feather as feather
import torch
import torch.nn.functional as F
from bench_ranking_models import Clock, ensure_store
from harness import add_common_arguments, apply_threads, check_device, machine, parse_arguments, under_loads
from torch import nn
from torch.utils.data import DataLoader, Dataset

from stcrank.data.recflow.pickles import load_pickle

COLUMNS = (
    "request_id",
    "user_id",
    "request_timestamp",
    "device_id",
    "age",
    "gender",
    "province",
    "video_id",
    "author_id",
    "category_level_two",
    "upload_type",
    "upload_timestamp",
    "category_level_one",
    "effective_view",
)
"""The realshow columns the official ranking dataset keeps, in its order."""


class PerSampleRealshowDataset(Dataset):
    """One day of realshow exposures, one Python-built sample per ``__getitem__`` (the official loader's style).

    Args:
        feather_path: The day's ``realshow/{day}.feather``.
        sequence_path: The day's ``seq_effective_50_dict/{day}.pkl`` (request id -> ``int64 [50, 10]``).
    """

    def __init__(self, feather_path: Path, sequence_path: Path) -> None:
        table = feather.read_table(feather_path, columns=list(COLUMNS))
        self.rows = np.stack([table.column(name).to_numpy() for name in COLUMNS], axis=1)
        self.sequences = load_pickle(sequence_path)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> tuple:
        row = self.rows[index]
        request_time = time.localtime(int(row[2]) // 1000)
        upload_time = time.localtime(int(row[11]))
        history = self.sequences[int(row[0])][:, [0, 1, 2, 3, 4, 7]].copy()  # ids and the behaviour's time
        mask = (history[:, 5] > 0).astype(np.int8)
        length = int(mask.sum())
        behaviours = history[:, :5]
        if length:  # shift real behaviours' ids (category_level_one is not shifted in the official code)
            behaviours[-length:, :3] += 1
            behaviours[-length:, 4] += 1
        context = (request_time.tm_wday + 1, request_time.tm_hour + 1, request_time.tm_min + 1)
        user = (row[1] + 1, row[3] + 1, row[5] + 1, row[4] + 1, row[6] + 1)
        item = (row[7] + 1, row[8] + 1, row[9] + 1, row[12], row[10] + 1)
        upload = (upload_time.tm_wday + 1, upload_time.tm_hour + 1, upload_time.tm_min + 1)
        return (*context, *user, *item, *upload, behaviours, mask, max(length, 1), row[13])


class StraightforwardDIN(nn.Module):
    """A DIN of the official shape (embedding 8, attention MLP 10d -> 80 -> 1, tower 21d -> 128 -> 128 -> 32 -> 1).

    Args:
        id_counts: The release's ``id_cnt`` (tables have ``count + 2`` rows).
        dim: Embedding width.
    """

    def __init__(self, id_counts: dict[str, int], dim: int = 8) -> None:
        super().__init__()

        def table(rows: int, padding: int = 0) -> nn.Embedding:
            return nn.Embedding(rows, dim, padding_idx=padding)

        self.user = nn.ModuleList(
            [table(id_counts[name] + 2) for name in ("user_id", "device_id", "gender", "age", "province")]
        )
        self.video, self.author = table(id_counts["video_id"] + 2), table(id_counts["author_id"] + 2)
        self.category_two = table(id_counts["category_level_two"] + 2)
        self.category_one = table(id_counts["category_level_one"] + 2, padding=2)
        self.upload_type = table(id_counts["upload_type"] + 2)
        self.wday, self.hour, self.minute = table(7 + 2), table(24 + 2), table(60 + 2)
        self.attention = nn.Sequential(nn.Linear(10 * dim, 80), nn.ReLU(), nn.Linear(80, 1))
        self.tower = nn.Sequential(
            nn.Linear(21 * dim, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 32), nn.ReLU(),
            nn.Linear(32, 1),
        )  # fmt: skip

    def _item(self, ids: list[torch.Tensor]) -> torch.Tensor:
        video, author, category_two, category_one, upload_type = ids
        parts = [self.video(video), self.author(author), self.category_two(category_two)]
        return torch.cat([*parts, self.category_one(category_one), self.upload_type(upload_type)], dim=-1)

    def forward(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        """Logits ``[B]`` of a collated batch (the dataset's tuple without the label)."""
        wday, hour, minute, *rest = inputs
        user, item, upload = rest[:5], rest[5:10], rest[10:13]
        behaviours, mask = rest[13], rest[14]
        context = torch.cat([self.wday(wday), self.hour(hour), self.minute(minute)], dim=-1)
        user = torch.cat([table(ids) for table, ids in zip(self.user, user, strict=True)], dim=-1)
        target = self._item(item)  # [B, 5d]
        history = self._item([behaviours[:, :, j] for j in range(5)])  # [B, 50, 5d]
        pairs = torch.cat([history, target.unsqueeze(1).expand_as(history)], dim=-1)
        logits = self.attention(pairs).transpose(1, 2)  # [B, 1, 50]
        logits = torch.where(mask.ne(0).unsqueeze(1), logits, torch.full_like(logits, -(2**30) + 1))
        interest = torch.bmm(F.softmax(logits, dim=2), history).squeeze(1)
        upload = torch.cat([self.wday(upload[0]), self.hour(upload[1]), self.minute(upload[2])], dim=-1)
        return self.tower(torch.cat([context, user, interest, target, upload], dim=-1)).squeeze(-1)


def _rates(samples: int, wall: float, cpu: float, load_seconds: float) -> dict[str, float]:
    return {
        "samples": samples,
        "samples_per_cpu_s": round(samples / cpu, 1),
        "samples_per_s": round(samples / wall, 1),
        "day_load_s": round(load_seconds, 2),
    }


def train_reference(release: Path, days: list[str], steps: int, batch_size: int, device: str) -> dict[str, float]:
    """Steps of the reference pipeline over the training days (day loads timed apart)."""
    torch.manual_seed(0)
    model = StraightforwardDIN(load_pickle(release / "others" / "id_cnt.pkl")).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    clock = Clock(device)
    samples = done = 0
    wall = cpu = loading = 0.0
    while done < steps:
        for day in days:
            started = time.perf_counter()
            dataset = PerSampleRealshowDataset(
                release / "realshow" / f"{day}.feather", release / "seq_effective_50_dict" / f"{day}.pkl"
            )
            loading += time.perf_counter() - started
            loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=0, drop_last=True)
            begin = clock()
            for inputs in loader:
                features = [value.long().to(device) for value in inputs[:-1]]
                label = inputs[-1].float().to(device)
                loss = F.binary_cross_entropy_with_logits(model(features), label)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                samples += len(label)
                done += 1
                if done == steps:
                    break
            end = clock()
            wall, cpu = wall + end[0] - begin[0], cpu + end[1] - begin[1]
            if done == steps:
                break
    return _rates(samples, wall, cpu, loading)


def train_stcrank(store: Path, steps: int, batch_size: int, device: str, group_requests: bool) -> dict[str, float]:
    """Steps of stcrank's DIN training through the data module (day loads timed apart)."""
    from stcrank.data.recflow.ranking_data import RecFlowRankingDataModule
    from stcrank.models.din import DIN
    from stcrank.tasks.ranking import RankingTask

    torch.manual_seed(0)
    data = RecFlowRankingDataModule(str(store), batch_size=batch_size, group_requests=group_requests)
    task = RankingTask(network=lambda sizes: DIN(sizes), feature_sizes=data.feature_sizes).to(device)
    optimizer = torch.optim.Adam(task.parameters(), lr=1e-2)
    clock = Clock(device)
    loader = data.train_dataloader()
    dataset = loader.dataset
    samples = done = 0
    wall = cpu = loading = 0.0
    while done < steps:
        for day, rows in loader.sampler:
            if dataset._cached is None or dataset._cached[0] != day:  # the day's one-off load
                started = time.perf_counter()
                dataset.day(day)
                loading += time.perf_counter() - started
            begin = clock()
            batch = {key: value.to(device) for key, value in dataset[(day, rows)].items()}
            optimizer.zero_grad()
            task.training_step(batch, done).backward()
            optimizer.step()
            end = clock()
            wall, cpu = wall + end[0] - begin[0], cpu + end[1] - begin[1]
            samples += len(batch["label"])
            done += 1
            if done == steps:
                break
    return _rates(samples, wall, cpu, loading)


def measure(args: argparse.Namespace, release: Path, store: Path) -> dict:
    """The three pipelines once each, and the ratios stcrank / reference."""
    from stcrank.data.recflow.store import read_manifest

    days = [day for day in read_manifest(str(store))["days"] if day != read_manifest(str(store))["test_day"]]
    reference = train_reference(release, days, args.steps, args.batch_size, args.device)
    rows = train_stcrank(store, args.steps, args.batch_size, args.device, group_requests=False)
    grouped = train_stcrank(store, args.steps, args.batch_size, args.device, group_requests=True)
    ratio = {
        f"{name}_over_reference": {
            key: round(figures[key] / reference[key], 2) for key in ("samples_per_cpu_s", "samples_per_s")
        }
        for name, figures in (("stcrank", rows), ("stcrank_grouped", grouped))
    }
    return {"reference": reference, "stcrank": rows, "stcrank_grouped": grouped, **ratio}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=None, help="where the release and store go (reused)")
    parser.add_argument("--users", type=int, default=600)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=1024)
    add_common_arguments(parser)
    args = parse_arguments(parser)
    apply_threads(args.threads)
    check_device(args.device)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="stcrank-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    store = ensure_store(workdir, args.users)
    release = workdir / f"release-{args.users}"

    def headline(figures: dict) -> dict:
        return {name: figures[name]["samples_per_s"] for name in ("reference", "stcrank", "stcrank_grouped")}

    report = {
        "release": str(release),
        "store": str(store),
        "steps": args.steps,
        "batch_size": args.batch_size,
        "machine": machine(args),
        "results": under_loads(lambda: measure(args, release, store), args, headline),
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
