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
