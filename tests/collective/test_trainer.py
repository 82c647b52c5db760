"""The collective trainer as a researcher uses it: own Dataset, own optimizer, own plugin, no global reseeding."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from learngene.collective.learner import from_config
from learngene.collective.plugins import GrowthPlugin, Plugin
from learngene.collective.trainer import CollectiveTrainer
from learngene.config import load_config
from learngene.data import TaskStream
from learngene.models import create_model
from learngene.models.schedule import GrowthSchedule


def _fake_stream(n_tasks: int = 2) -> TaskStream:
    """A torchvision dataset, straight into a task stream (the path a user's own Dataset takes)."""
    ds = torchvision.datasets.FakeData(size=240, image_size=(1, 20, 20), num_classes=12,
                                       transform=torchvision.transforms.ToTensor(),
                                       random_offset=0)
    return TaskStream.from_dataset(ds, n_tasks=n_tasks, ways=3, image_size=16, seed=0)


class Lifecycle(Plugin):
    """A user-written plugin: records the hooks it sees, adds an L2 term to the loss, keeps state in checkpoints."""

    name = "lifecycle"

    def __init__(self, weight: float = 0.0) -> None:
        self.events: list[str] = []
        self.weight = weight
        self.batches = 0

    def before_task(self, trainer, t):
        self.events.append(f"before_task {t}")

    def after_growth(self, trainer, plan):
        self.events.append(f"after_growth {plan.kind}")

    def before_epochs(self, trainer, t):
        self.events.append(f"before_epochs {t}")

    def before_epoch(self, trainer, t, epoch):
        self.events.append(f"before_epoch {t}.{epoch}")

    def loss(self, trainer, batch):
        self.batches += 1
        return self.weight * sum((p**2).sum() for p in trainer.network.parameters())

    def after_epoch(self, trainer, t, epoch, row):
        row["lifecycle_batches"] = self.batches
        self.events.append(f"after_epoch {t}.{epoch}")

    def after_task(self, trainer, t, result):
        result["seen_by_plugin"] = True
        self.events.append(f"after_task {t}")

    def after_task_done(self, trainer, t):
        self.events.append(f"after_task_done {t}")

    def state_dict(self):
        return {"batches": self.batches}

    def load_state_dict(self, state, trainer):
        self.batches = int(state["batches"])


def _trainer(plugins=(), optimizer=None, epochs: int = 1) -> CollectiveTrainer:
    stream = _fake_stream()
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = create_model("test_vgg", in_channels=1, image_size=16, num_classes=3)
    grow = GrowthPlugin(GrowthSchedule(mode="round_robin", step=2), trigger="always")
    return CollectiveTrainer(net, stream, plugins=[grow, *plugins], optimizer=optimizer, epochs=epochs,
                             batch_size=16, loss_scope="all")


def test_user_plugin_sees_the_documented_lifecycle_and_its_loss_counts():
    plugin = Lifecycle()
    report = _trainer([plugin]).fit(progress=False)
    assert plugin.events == [
        "before_task 0", "before_epochs 0", "before_epoch 0.0", "after_epoch 0.0", "after_task 0", "after_task_done 0",
        # plugins run in list order: the growth plugin (listed first) widens before this one's before_task
        "after_growth widen", "before_task 1", "after_growth classes", "before_epochs 1", "before_epoch 1.0",
        "after_epoch 1.0", "after_task 1", "after_task_done 1",
    ]
    assert all(t["seen_by_plugin"] for t in report["tasks"]) and plugin.batches > 0
    assert report["tasks"][1]["epochs"][0]["lifecycle_batches"] == plugin.batches
    # the plugin's loss term reaches the optimizer: a strong L2 pull shrinks the weights
    free, pulled = _trainer(), _trainer([Lifecycle(weight=1.0)])
    free.fit(progress=False)
    pulled.fit(progress=False)
    norm = lambda t: sum(float(p.detach().norm()) for p in t.network.parameters())  # noqa: E731
    assert norm(pulled) < 0.8 * norm(free)


def test_optimizer_factory_is_rebuilt_after_growth_over_every_parameter():
    made: list[torch.optim.Optimizer] = []

    def adam(params):
        opt = torch.optim.Adam(params, lr=1e-3)
        made.append(opt)
        return opt

    trainer = _trainer(optimizer=adam)
    trainer.fit(progress=False)
    assert len(made) == 2 and all(isinstance(o, torch.optim.Adam) for o in made)
    in_last = {id(p) for g in made[-1].param_groups for p in g["params"]}
    assert in_last == {id(p) for p in trainer.network.parameters()}  # the grown parameters included
    assert trainer.network.widths != create_model("test_vgg").widths  # it did grow


def test_plugin_state_is_checkpointed_and_restored(tmp_path):
    from learngene.collective.plugins import CheckpointPlugin

    first = Lifecycle()
    _trainer([first, CheckpointPlugin()]).fit(ckpt_dir=tmp_path / "ck", progress=False)
    again = Lifecycle()
    trainer = _trainer([again, CheckpointPlugin()])
    trainer.fit(ckpt_dir=tmp_path / "ck", resume=True, progress=False)  # everything was done: nothing reruns
    assert again.batches == first.batches and again.events == []


def test_training_leaves_the_callers_global_rng_alone():
    cfg = load_config("smoke")
    from learngene.prepare import load_data, make_split, make_stream

    data = load_data(cfg)
    stream = make_stream(cfg, data, make_split(cfg, data))
    torch.manual_seed(1234)
    before = torch.get_rng_state()
    trainer = from_config(cfg, stream, data.input_spec(stream.split.source))
    trainer.fit(progress=False)
    assert torch.equal(torch.get_rng_state(), before)


def test_network_keeps_timm_conventions():
    net = create_model("test_vgg", in_channels=1, image_size=16, num_classes=3).eval()
    x = torch.randn(2, 1, 16, 16)
    assert torch.equal(net.forward_head(net.forward_features(x)), net(x))
    net.reset_classifier(7)
    assert net(x).shape == (2, 7) and isinstance(net, nn.Module)


class _Plain(nn.Module):
    """A user's own network: no widths, no config(), no growth; a head for every source class up front."""

    def __init__(self, classes: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.head = nn.Linear(32, classes)
        self.num_classes = classes

    def forward(self, x):
        return self.head(self.body(x))


def test_a_plain_module_trains_checkpoints_and_resumes(tmp_path):
    from learngene.collective.plugins import CheckpointPlugin

    stream = _fake_stream()
    n = len(stream.split.source)

    class Stop(Exception):
        pass

    resumed_at = []

    class Watch(Plugin):
        name = "watch"

        def after_resume(self, trainer, t, epoch):
            resumed_at.append((t, epoch))

    def kill(t, e):
        if (t, e) == (1, 0):
            raise Stop

    full = CollectiveTrainer(_Plain(n), stream, epochs=2, batch_size=16, loss_scope="all").fit(progress=False)
    first = CollectiveTrainer(_Plain(n), stream, epochs=2, batch_size=16, loss_scope="all",
                              plugins=[CheckpointPlugin()])
    torch.manual_seed(0)
    try:
        first.fit(ckpt_dir=tmp_path / "ck", progress=False, on_epoch=kill)
    except Stop:
        pass
    again = CollectiveTrainer(_Plain(n), stream, epochs=2, batch_size=16, loss_scope="all",
                              plugins=[CheckpointPlugin(), Watch()])
    report = again.fit(ckpt_dir=tmp_path / "ck", resume=True, progress=False)
    assert resumed_at == [(1, 1)]  # inside task 1, epoch 1 next: plugins are told, before_task is not replayed
    assert report["final"]["params"] == sum(p.numel() for p in again.network.parameters())
    assert len(report["tasks"]) == 2 and "effective_widths" not in report["tasks"][0]
    assert [t["acc_task_aware"] for t in report["tasks"]] != [] and len(full["tasks"]) == 2


def test_a_plain_module_too_small_for_the_classes_is_refused_clearly():
    import pytest

    from learngene.errors import ConfigError

    with pytest.raises(ConfigError, match="has 3 outputs and no expand_classes"):
        CollectiveTrainer(_Plain(3), _fake_stream(), epochs=1, batch_size=16).fit(progress=False)


def test_a_plugin_with_an_old_hook_name_still_runs_and_is_warned():
    with pytest.warns(DeprecationWarning, match="on_task_end is the old name of the hook after_task_done"):
        class Old(Plugin):
            def on_task_end(self, trainer, t):
                self.done = t

    plugin = Old()
    plugin.after_task_done(None, 3)
    assert plugin.done == 3
