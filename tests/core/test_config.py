import pytest

from llmhni_local.core.config import TrainConfig, TrainSettings, load_config
from llmhni_local.core.errors import ConfigError


def test_defaults_follow_method_md():
    c = TrainConfig()
    assert (c.model.dim, c.model.layers) == (64, 3)
    assert (c.train.lr, c.train.batch_size, c.train.l2) == (1e-3, 2048, 1e-4)
    assert (c.train.ssl_temp, c.train.edge_drop) == (0.2, 0.1)
    assert 20 in c.eval.ks


def test_priority_flags_over_file_over_defaults(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('[train]\nepochs = 7\nlr = 0.01\n[model]\nname = "ngcf"\n')
    c = load_config(TrainConfig, f, {"train.epochs": 3})
    assert c.train.epochs == 3 and c.train.lr == 0.01 and c.model.name == "ngcf"
    assert c.train.batch_size == 2048


@pytest.mark.parametrize("text,needle", [
    ('[train]\nepoch = 7\n', "train.epoch"),
    ('[trian]\nepochs = 7\n', "trian"),
    ('[model]\nname = "gcn"\n', "model.name"),
    ('[train]\nepochs = "many"\n', "train.epochs"),
    ('[train\n', "not valid TOML"),
])
def test_bad_settings_name_the_key(tmp_path, text, needle):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=needle.replace("[", r"\[")) as exc:
        load_config(TrainConfig, f)
    assert str(f) in str(exc.value)


def test_settings_are_frozen_and_validated():
    s = TrainSettings()
    with pytest.raises(Exception):
        s.epochs = 3  # type: ignore[misc]
    with pytest.raises(ConfigError):
        TrainSettings(tce_max_drop=1.5)


def test_merge_leaves_the_callers_dicts_alone():
    from llmhni_local.core.config import merge

    base = {"llmhni": {"align": {"epochs": 3}}, "pipeline": {"seeds": [0]}}
    over = {"llmhni.align.epochs": 9, "pipeline": {"seeds": [1, 2]}}
    out = merge(base, over)
    assert out["llmhni"]["align"]["epochs"] == 9 and out["pipeline"]["seeds"] == [1, 2]
    assert base == {"llmhni": {"align": {"epochs": 3}}, "pipeline": {"seeds": [0]}}
    out["pipeline"]["seeds"].append(5)
    assert over["pipeline"]["seeds"] == [1, 2]


def test_parse_sets_values_are_toml_and_keys_dotted():
    from llmhni_local.core.config import parse_sets

    assert parse_sets(["train.lr=0.5", "pipeline.methods=['bpr']", "data.source=ml100k"]) == {
        "train.lr": 0.5, "pipeline.methods": ["bpr"], "data.source": "ml100k"}
    for bad in ("train.lr", "lr=0.5"):
        with pytest.raises(ConfigError, match="table.key=value"):
            parse_sets([bad])


def test_one_file_serves_every_command(tmp_path):
    """Tables of other commands are skipped; an unknown table still names itself."""
    f = tmp_path / "c.toml"
    f.write_text('[train]\nepochs = 7\n[rater]\nbackend = "transformers"\n[finetune]\nr = 4\n')
    assert load_config(TrainConfig, f, ignore=("rater", "finetune")).train.epochs == 7
    with pytest.raises(ConfigError, match="rater"):
        load_config(TrainConfig, f, ignore=("finetune",))


def test_run_config_and_train_config_share_the_loader(tmp_path):
    from llmhni_local.stages.settings import load_run_config

    f = tmp_path / "c.toml"
    f.write_text('[train]\nepochs = 7\n[finetune]\nr = 4\n[profiles]\nsummarize = true\n')
    cfg = load_run_config(f, {"train.lr": 0.5})
    assert (cfg.train.epochs, cfg.train.lr, cfg.profiles.summarize) == (7, 0.5, True)
