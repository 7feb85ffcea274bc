"""The card as text: `rotoscope show` says how a filter was made, including what older cards left unsaid."""

from rotoscope.card import format_card
from rotoscope.config import TrainConfig


def settings_line(card: dict) -> str:
    return next(line for line in format_card(card).splitlines() if "steps=" in line)


def test_settings_are_printed_as_recorded():
    card = {"name": "x", "training": TrainConfig().replace(color_match="sliced", steps=7).to_dict()}
    line = settings_line(card)
    assert "color_match=sliced" in line and "steps=7" in line


def test_a_card_from_before_colour_match_existed_says_moments():
    training = TrainConfig().to_dict()
    del training["color_match"]
    assert "color_match=moments" in settings_line({"name": "old", "training": training})


def test_a_distilled_filter_names_its_teacher_and_others_say_nothing_of_one():
    training = TrainConfig().replace(arch="lite", teacher="great-wave").to_dict()
    card = {"name": "gw-lite", "training": training,
            "teacher": {"name": "great-wave", "card_hash": "0123456789abcdef", "arch": "full"}}
    line = next(line for line in format_card(card).splitlines() if line.startswith("teacher"))
    assert "great-wave (full network; card 0123456789ab" in line
    assert not any(line.startswith("teacher") for line in format_card({"name": "x"}).splitlines())


def test_held_out_shows_the_untrained_score_and_each_evaluations_step():
    """A run shorter than eval_every is evaluated once, at its end: 'first' and 'last' would be the same numbers,
    as if nothing was learned. The untrained network's score (step 0) is the starting point to compare with."""
    start, end = {"total": 7.5}, {"total": 2.25}
    short = {"holdout_start": start, "holdout_first": end, "holdout_last": end,
             "holdout_curve": [{"step": 0, **start}, {"step": 30, **end}]}
    text = format_card({"name": "x", "history": short})
    assert "untrained total 7.5000  (step 0)" in text and "last      total 2.2500  (step 30)" in text
    assert "first     total" not in text  # one evaluation: shown once
    mid = {"total": 3.0}
    long = {**short, "holdout_first": mid,
            "holdout_curve": [{"step": 0, **start}, {"step": 100, **mid}, {"step": 200, **end}]}
    text = format_card({"name": "x", "history": long})
    assert "first     total 3.0000  (step 100)" in text and "last      total 2.2500  (step 200)" in text
    # a card from before the curve was kept: first and last as recorded, no steps
    old = format_card({"name": "x", "history": {"holdout_first": mid, "holdout_last": end}})
    assert "first     total 3.0000" in old and "(step" not in old


def test_a_cards_backbone_is_described_in_the_librarys_words_of_today():
    """A shipped filter trained before a study changed what the library says of its backbone shows today's words
    (the stored text stays in the file); a backbone this version does not know keeps the card's own."""
    from rotoscope.backbones import BACKBONES

    old = {"name": "x", "backbone": {"name": "vgg16-hed", "about": "Carries real strokes and shapes."}}
    line = next(line for line in format_card(old).splitlines() if line.startswith("backbone"))
    assert BACKBONES["vgg16-hed"].about in line and "Carries real strokes" not in line
    unknown = {"name": "x", "backbone": {"name": "resnet-next", "about": "a network of the future"}}
    assert "a network of the future" in format_card(unknown)
