import pytest

from stcrank.simulation.config import (
    DEFAULT_CATEGORIES,
    BehaviourConfig,
    CategorySpec,
    ExploreConfig,
    FocusConfig,
    WorldConfig,
    config_from_dict,
    config_to_dict,
)


def test_configs_round_trip_through_dicts():
    configs = [
        WorldConfig(users=10, items=500, categories=DEFAULT_CATEGORIES[:3]),
        BehaviourConfig(exit_depth=0.1),
        FocusConfig(candidates=50, page_size=5),
        ExploreConfig(candidates=30, page_size=10, focus=FocusConfig(candidates=40)),
    ]
    for config in configs:
        assert config_from_dict(type(config), config_to_dict(config)) == config


def test_default_categories_span_high_and_low_involvement():
    by_name = {c.name: c for c in DEFAULT_CATEGORIES}
    assert by_name["womens_shoes"].involvement > 3 > 0.5 > by_name["socks"].involvement
    assert by_name["womens_shoes"].swipe > by_name["socks"].swipe


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: BehaviourConfig(purchase_time_multipliers=((5.0, 1.0),)), "ipv_threshold"),
        (lambda: BehaviourConfig(purchase_time_multipliers=((2.0, 1.0), (2.0, 2.0))), "increasing"),
        (lambda: BehaviourConfig(watch_sigma=0.0), "watch_sigma"),
        (lambda: FocusConfig(candidates=5, page_size=10), "page_size"),
        (lambda: FocusConfig(same_category_share=1.5), "same_category_share"),
        (lambda: ExploreConfig(candidates=10, page_size=20), "page_size"),
        (lambda: WorldConfig(categories=(CategorySpec("a", 1.0, 0.5, 1.0),)), "two categories"),
        (lambda: WorldConfig(categories=(CategorySpec("a", 0.0, 0.5, 1.0),) * 2), "involvement"),
        (lambda: WorldConfig(users=0), "users"),
    ],
)
def test_invalid_configs_are_rejected(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_same_category_candidates_rounds_the_share():
    assert FocusConfig(candidates=200, same_category_share=0.6).same_category_candidates == 120
