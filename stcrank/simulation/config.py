"""Parameters of the e-shop simulator: the population, the behaviour model and the two serving stages.

Four frozen dataclasses, each one concern:

* :class:`WorldConfig`: how many users, items, brands and categories there are and how their latent
  traits are spread (drawn once by :class:`~stcrank.simulation.world.World`).
* :class:`BehaviourConfig`: the coefficients of the response model (watch time, purchase, exit, E-stage
  click and swipe, return proxy). Its exit intercepts are calibrated so that served traffic shows the
  paper's Table 2 (see :mod:`stcrank.simulation.calibration`).
* :class:`FocusConfig`: how the F stage serves (candidates per request, list length, maximum depth).
* :class:`ExploreConfig`: how the E stage serves (homepage candidates and length).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class CategorySpec:
    """One product category.

    Attributes:
        name: Category name (``"womens_shoes"``).
        involvement: Views scale ``h`` of the involvement curve ``g(n) = 1 - exp(-(n + 1) / h)``, where ``n``
            is the number of earlier valid views of the category in the session. Low values (socks: 0.3)
            convert at once (``g(0)`` near 1); high ones (shoes: 4) need several same-category views.
        swipe: Probability that a user swipes from the item's detail page into the F stage (before the
            user's own swipe propensity).
        price: Median price of the category's items.
        buy_offset: Category offset of the purchase logit.
        ctr_offset: Category offset of the E-stage click logit.
        group: Related categories share a group; the F stage retrieves related items from the same group.
        weight: Relative share of the catalogue's items.
    """

    name: str
    involvement: float
    swipe: float
    price: float
    buy_offset: float = 0.0
    ctr_offset: float = 0.0
    group: str = ""
    weight: float = 1.0


DEFAULT_CATEGORIES: tuple[CategorySpec, ...] = (
    CategorySpec("womens_shoes", 4.0, 0.55, 60.0, 0.6, 0.0, "fashion", 1.2),
    CategorySpec("womens_clothes", 3.5, 0.50, 45.0, 0.5, 0.1, "fashion", 1.5),
    CategorySpec("athletic_shoes_clothing", 3.0, 0.45, 70.0, 0.4, 0.0, "fashion", 1.0),
    CategorySpec("bags_suitcases", 3.0, 0.45, 80.0, 0.3, -0.1, "fashion", 0.8),
    CategorySpec("belts_hats_scarves", 2.0, 0.40, 20.0, 0.2, 0.0, "fashion", 0.8),
    CategorySpec("mens_clothes", 2.5, 0.40, 40.0, 0.3, -0.1, "fashion", 1.0),
    CategorySpec("underwear", 0.6, 0.25, 12.0, -0.2, 0.0, "basics", 1.0),
    CategorySpec("socks", 0.3, 0.20, 6.0, -0.3, 0.0, "basics", 0.8),
    CategorySpec("snacks", 0.3, 0.20, 8.0, -0.2, 0.1, "home", 1.0),
    CategorySpec("household", 0.8, 0.25, 15.0, -0.1, -0.1, "home", 1.0),
    CategorySpec("beauty", 1.5, 0.35, 25.0, 0.1, 0.0, "beauty", 1.0),
    CategorySpec("phone_accessories", 1.5, 0.30, 20.0, 0.0, -0.1, "home", 0.9),
)
"""Twelve categories from high involvement (shoes, clothes, bags) to low (socks, snacks)."""


@dataclass(frozen=True)
class WorldConfig:
    """Sizes of the population and spreads of its latent traits.

    Attributes:
        users: Number of users.
        items: Number of items (split over categories by their ``weight``).
        brands: Number of brands (authors); each belongs to one category.
        dim: Dimension of the user and item taste vectors.
        price_buckets: Number of quantile buckets of the logged price feature.
        categories: The categories.
        related_pool: Items of other categories that each category's F-stage retrieval may return.
        related_group_weight: How much more likely a related item comes from the trigger's group than from
            an unrelated category.
        taste_scale: Weight of the taste-vector dot product in the affinity.
        interest_scale: Spread of user-by-category interest.
        brand_quality_scale: Spread of brand quality.
        item_quality_scale: Spread of item quality around its brand.
        appeal_scale: Spread of eye-catching appeal (lengthens short views, unrelated to purchase).
        richness_buy_corr: Correlation of an item's content richness (long-view tail) with its buyability.
        buyability_scale: Spread of item buyability (purchase logit).
        price_spread: Spread of log price around its category median.
        user_exit_scale: Spread of user exit propensity (heterogeneity makes the exit hazard fall with depth).
        user_buy_scale: Spread of user purchase propensity.
        user_swipe_scale: Spread of user propensity to swipe into the F stage.
        price_sensitivity: Mean user price sensitivity (purchase logit per unit log price above median).
        price_sensitivity_scale: Its spread.
        feature_noise: Noise of the observable user features around the latent traits they reveal.
    """

    users: int = 2000
    items: int = 20000
    brands: int = 600
    dim: int = 8
    price_buckets: int = 10
    categories: tuple[CategorySpec, ...] = DEFAULT_CATEGORIES
    related_pool: int = 1000
    related_group_weight: float = 10.0
    taste_scale: float = 0.8
    interest_scale: float = 0.7
    brand_quality_scale: float = 0.3
    item_quality_scale: float = 0.4
    appeal_scale: float = 0.4
    richness_buy_corr: float = 0.5
    buyability_scale: float = 0.5
    price_spread: float = 0.5
    user_exit_scale: float = 2.5
    user_buy_scale: float = 0.5
    user_swipe_scale: float = 0.5
    price_sensitivity: float = 0.5
    price_sensitivity_scale: float = 0.2
    feature_noise: float = 0.5

    def __post_init__(self) -> None:
        if self.users < 1 or self.items < 1 or self.brands < len(self.categories):
            raise ValueError(
                f"WorldConfig needs users >= 1, items >= 1 and brands >= #categories ({len(self.categories)}); "
                f"got users={self.users}, items={self.items}, brands={self.brands}"
            )
        if len(self.categories) < 2:
            raise ValueError("WorldConfig needs at least two categories")
        if any(c.involvement <= 0 or not 0 <= c.swipe <= 1 or c.price <= 0 for c in self.categories):
            raise ValueError("every category needs involvement > 0, swipe in [0, 1] and price > 0")


@dataclass(frozen=True)
class BehaviourConfig:
    """Coefficients of the response model (see docs/simulator.md for the equations).

    Attributes:
        watch_mu: Log-seconds intercept of the watch-time LogNormal.
        watch_affinity: Slope of the log-mean in affinity.
        watch_appeal: Slope of the log-mean in item appeal.
        watch_sigma: Base log-sd of the watch time.
        watch_richness: Log-sd grows as ``exp(watch_richness * richness)``: rich items have long tails.
        ipv_threshold: Seconds above which a view is valid (IPV); a purchase needs one.
        purchase_bias: Intercept of the purchase logit.
        purchase_affinity: Slope of the purchase logit in affinity.
        purchase_time_multipliers: ``(threshold_s, multiplier)`` pairs: the purchase probability given the
            watch time ``T`` is ``min(1, q * m_k)`` for the last threshold below ``T``. The first threshold
            must be ``ipv_threshold`` (no purchase below it). Rising multipliers make conversion and long
            views overlap more as ``T`` grows (paper Table 1).
        exit_bias: Intercept of the exit logit after an item without purchase (``e0``); calibrated.
        exit_affinity: Exit logit falls by this per unit affinity of the item just seen.
        exit_depth: Exit logit change per item already seen (fatigue; 0 by default).
        exit_after_purchase_bias: Intercept of the exit logit after a purchase (``e1``); calibrated.
        exit_after_purchase_user: Weight of the user's exit propensity in ``e1``.
        ctr_bias: Intercept of the E-stage click logit.
        ctr_affinity: Slope of the click logit in affinity.
        ctr_appeal: Slope of the click logit in appeal.
        detail_purchase_multiplier: Purchase multiplier on the E-stage detail page (first view, ``n = 0``).
        swipe_after_purchase: Multiplier of the swipe-into-F probability after a detail-page purchase.
        explore_exit_bias: Intercept of the logit of leaving the homepage after an exposure.
        explore_exit_user: Weight of the user's exit propensity in it.
        return_bias: Intercept of the return-probability proxy (tomorrow's visit).
        return_ipv: Its slope in ``log1p(valid views)``.
        return_purchase: Its slope in purchases.
    """

    watch_mu: float = math.log(2.5)
    watch_affinity: float = 0.5
    watch_appeal: float = 1.0
    watch_sigma: float = 0.9
    watch_richness: float = 0.25
    ipv_threshold: float = 2.0
    purchase_bias: float = -5.0
    purchase_affinity: float = 0.6
    purchase_time_multipliers: tuple[tuple[float, float], ...] = ((2.0, 0.6), (5.0, 1.0), (25.0, 1.8))
    exit_bias: float = 1.90
    exit_affinity: float = 0.4
    exit_depth: float = 0.0
    exit_after_purchase_bias: float = 1.20
    exit_after_purchase_user: float = 0.25
    ctr_bias: float = -3.6
    ctr_affinity: float = 0.8
    ctr_appeal: float = 0.5
    detail_purchase_multiplier: float = 1.0
    swipe_after_purchase: float = 0.4
    explore_exit_bias: float = -2.2
    explore_exit_user: float = 0.2
    return_bias: float = 0.0
    return_ipv: float = 0.3
    return_purchase: float = 0.2

    def __post_init__(self) -> None:
        thresholds = [t for t, _ in self.purchase_time_multipliers]
        if not thresholds or thresholds[0] != self.ipv_threshold or thresholds != sorted(set(thresholds)):
            raise ValueError(
                "purchase_time_multipliers must start at ipv_threshold and have increasing thresholds; "
                f"got {self.purchase_time_multipliers} with ipv_threshold={self.ipv_threshold}"
            )
        if any(m < 0 for _, m in self.purchase_time_multipliers) or self.watch_sigma <= 0:
            raise ValueError("purchase multipliers must be >= 0 and watch_sigma > 0")


@dataclass(frozen=True)
class FocusConfig:
    """How the F stage serves a session.

    Attributes:
        candidates: Candidates ``n`` retrieved for the trigger; every request of the session ranks those not
            shown yet (the retrieval of a trigger is fixed, the server removes what was shown).
        page_size: Items ``m`` returned per request; a new request follows when a page is exhausted.
        max_depth: Items after which a session is cut (truncated, not an exit).
        same_category_share: Share of the candidates from the trigger's category; the rest are related items.
        trigger_counts_as_view: Whether the trigger's detail page counts as a same-category view.
    """

    candidates: int = 200
    page_size: int = 10
    max_depth: int = 100
    same_category_share: float = 0.6
    trigger_counts_as_view: bool = True

    def __post_init__(self) -> None:
        if not 1 <= self.page_size <= self.candidates:
            raise ValueError(f"FocusConfig needs 1 <= page_size <= candidates; got {self.page_size}, {self.candidates}")
        if self.max_depth < 1 or not 0.0 <= self.same_category_share <= 1.0:
            raise ValueError("FocusConfig needs max_depth >= 1 and same_category_share in [0, 1]")

    @property
    def same_category_candidates(self) -> int:
        """Number of candidates drawn from the trigger's category."""
        return round(self.candidates * self.same_category_share)


@dataclass(frozen=True)
class ExploreConfig:
    """How the E stage (homepage) serves a visit.

    Attributes:
        candidates: Candidates retrieved for the homepage (by the user's category interests).
        page_size: Items shown on the homepage, scanned in order until the user leaves.
        interest_temperature: Retrieval draws a category with probability proportional to
            ``share_c * exp(interest_uc / interest_temperature)``.
        focus: How the F sessions entered from the homepage are served.
    """

    candidates: int = 100
    page_size: int = 20
    interest_temperature: float = 0.7
    focus: FocusConfig = field(default_factory=FocusConfig)

    def __post_init__(self) -> None:
        if not 1 <= self.page_size <= min(self.candidates, 255):
            raise ValueError(
                f"ExploreConfig needs 1 <= page_size <= min(candidates, 255); got {self.page_size}, {self.candidates}"
            )


def config_to_dict(config: WorldConfig | BehaviourConfig | FocusConfig | ExploreConfig) -> dict:
    """A JSON-ready dict of a config (nested configs and categories included).

    Args:
        config: Any of the simulator's configs.

    Returns:
        The dict; :func:`config_from_dict` restores the config.
    """
    return asdict(config)


def config_from_dict(cls: type, values: dict) -> object:
    """Rebuild a config from :func:`config_to_dict` output (e.g. read back from a manifest).

    Args:
        cls: :class:`WorldConfig`, :class:`BehaviourConfig`, :class:`FocusConfig` or :class:`ExploreConfig`.
        values: The dict.

    Returns:
        The config.
    """
    values = dict(values)
    if cls is WorldConfig and "categories" in values:
        values["categories"] = tuple(CategorySpec(**c) for c in values["categories"])
    if cls is BehaviourConfig and "purchase_time_multipliers" in values:
        values["purchase_time_multipliers"] = tuple(tuple(p) for p in values["purchase_time_multipliers"])
    if cls is ExploreConfig and "focus" in values:
        values["focus"] = FocusConfig(**values["focus"])
    return cls(**values)
