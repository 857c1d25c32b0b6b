"""The model card of a run: TRL's own card, with the objective's paper, base model and adpo.

TRL writes ``README.md`` into ``output_dir`` with every checkpoint
(``GRPOTrainer._save_checkpoint`` → ``create_model_card``) from the trainer's ``_name`` and
``_paper`` (title, arXiv id, BibTeX). :data:`ADPO_PAPER` and :data:`OPO_PAPER` are those of
``ADPOTrainer``/``OPOTrainer``; :func:`complete` then fixes what TRL's template cannot know:

* the base model of a model loaded from a local folder (TRL writes ``[None](https://
  huggingface.co/None)``): the hub model the folder's own card names as its base, or else
  the folder, said in words;
* the quick start's ``model="None"`` of a run not pushed to the hub: the output folder;
* the adpo version (and git commit, as benchmark summaries record it) beside TRL's;
* a paper without an arXiv id (OPO): named in the sentence TRL writes without it.

:func:`complete` only rewrites what is still TRL's placeholder, so it can run after every
``create_model_card``.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path
from typing import Any

__all__ = ["ADPO_PAPER", "OPO_PAPER", "complete"]

#: the ADPO paper (arXiv:2510.18913; its earlier versions were titled "ADPO: Anchored Direct
#: Preference Optimization")
ADPO_PAPER: dict[str, str] = {
    "title": "From Probability to Advantage: Unifying Alignment via Anchored Ranking",
    "authors": "Wang Zixian",
    "id": "2510.18913",
    "citation": textwrap.dedent("""\
        @article{wang2025adpo,
            title        = {{From Probability to Advantage: Unifying Alignment via Anchored Ranking}},
            author       = {Zixian Wang},
            year         = 2025,
            eprint       = {arXiv:2510.18913},
        }"""),
}

#: the OPO paper (no arXiv id known to us: the card names it by title and author)
OPO_PAPER: dict[str, str] = {
    "title": "Orthogonalized Policy Optimization",
    "authors": "Wang Zixian",
    "citation": textwrap.dedent("""\
        @misc{wang_opo,
            title        = {{Orthogonalized Policy Optimization}},
            author       = {Zixian Wang},
        }"""),
}

_NO_BASE = "[None](https://huggingface.co/None)"


def _base_model(model: Any) -> tuple[str | None, str | None]:
    """``(hub id of the base model or None, local folder it was loaded from or None)``."""
    from trl.trainer.utils import get_config_model_id

    name = get_config_model_id(model.config)
    if not name:
        return None, None
    if not os.path.isdir(name):
        return name, None
    readme = Path(name) / "README.md"
    base = None
    if readme.is_file():
        from huggingface_hub import ModelCard

        base = ModelCard.load(readme).data.base_model
        if isinstance(base, list):
            base = base[0] if len(base) == 1 else None
    return (base if isinstance(base, str) and not os.path.isdir(base) else None), name


def complete(trainer: Any) -> None:
    """Complete the ``README.md`` TRL's ``create_model_card`` wrote in ``trainer.args.output_dir``."""
    path = Path(trainer.args.output_dir) / "README.md"
    if not trainer.is_world_process_zero() or not path.is_file():
        return
    from huggingface_hub import ModelCard

    from adpo._io import code_version

    card = ModelCard.load(path)
    text = card.text
    base, local = _base_model(trainer.model)
    if _NO_BASE in text:
        if base is not None:
            card.data.base_model = base
            named = f"[{base}](https://huggingface.co/{base})"
            text = text.replace(
                _NO_BASE, named + (f" (from the local folder `{local}`)" if local else "")
            )
        else:
            text = text.replace(_NO_BASE, f"the model in the local folder `{local or 'unknown'}`")
    if 'model="None"' in text:
        text = text.replace(
            'model="None"', f"model={str(trainer.args.output_dir)!r}".replace("'", '"')
        )
    paper = getattr(trainer, "_paper", {}) or {}
    plain = f"This model was trained with {trainer._name}."
    if plain in text and paper.get("title") and not paper.get("id"):
        text = text.replace(
            plain,
            f"This model was trained with {trainer._name}, a method introduced in "
            f"*{paper['title']}* ({paper.get('authors', 'unknown authors')}).",
        )
    if "\n- adpo:" not in text:
        version = code_version()
        line = f"- adpo: {version['adpo']}"
        if version["commit"]:
            line += f" (commit {version['commit']}{', dirty' if version['dirty'] else ''})"
        text = text.replace("### Framework versions\n\n", f"### Framework versions\n\n{line}\n", 1)
    card.text = text
    card.save(path)
