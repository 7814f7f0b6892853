"""The latent population of the simulator: users, items, brands and categories, drawn once under a seed.

Items are stored sorted by category, so the items of category ``c`` are the contiguous index range
``category_offsets[c]:category_offsets[c + 1]``; retrieval samples positions in that range. Internal indices
are 0-based; the logged ids and categorical features are 1-based (0 is the padding row of an embedding
table), produced by :meth:`World.user_features` and :meth:`World.item_features`, the one place that maps
between them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from stcrank.simulation.config import BehaviourConfig, WorldConfig

USER_BUCKETS = 5
"""Number of buckets of the observable user features (activity, purchase level, price level)."""


def _buckets(values: Tensor, buckets: int) -> Tensor:
    """Quantile buckets ``1..buckets`` of ``values`` (ties broken by rank, so buckets are equal-sized)."""
    ranks = torch.empty_like(values, dtype=torch.int64)
    ranks[values.argsort()] = torch.arange(values.numel())
    return (ranks * buckets // max(values.numel(), 1) + 1).to(torch.int64)


def _stratified_normal(n: int, generator: torch.Generator) -> Tensor:
    """The ``n`` quantiles ``Phi^-1((i + 0.5) / n)`` in random order.

    Scalar user traits are drawn this way so that every world of the same size has the same spread of
    exit and purchase propensities: the served exit rates, which the sticky tail of users dominates, then
    do not move with the world's seed.
    """
    ranks = torch.randperm(n, generator=generator).to(torch.float64)
    return torch.special.ndtri((ranks + 0.5) / n).to(torch.float32)


@dataclass(frozen=True, eq=False)
class World:
    """Users, items and categories with their latent traits, plus the behaviour coefficients.

    Build one with :meth:`World.build`; every tensor is fixed by the config and the seed. A world is
    immutable; :meth:`with_behaviour` returns a copy sharing the population with other coefficients.

    Attributes:
        config: Population sizes and trait spreads.
        behaviour: Coefficients of the response model.
        seed: Seed the population was drawn with.
        category_names: Name of each category.
        involvement: Views scale ``h_c`` of each category, ``[C]``.
        category_swipe: Base swipe-into-F probability of each category, ``[C]``.
        category_buy_offset: Purchase-logit offset of each category, ``[C]``.
        category_ctr_offset: Click-logit offset of each category, ``[C]``.
        category_price: Median price of each category, ``[C]``.
        category_offsets: Start of each category's item range, ``[C + 1]``.
        item_category: Category of each item, ``[I]``.
        item_brand: Brand (author) of each item, 0-based, ``[I]``.
        item_vec: Taste vector of each item, ``[I, d]``.
        item_quality: Quality (brand + item), ``[I]``.
        item_appeal: Eye-catching appeal: lengthens and encourages views, not purchases, ``[I]``.
        item_richness: Content richness: widens the watch-time tail, ``[I]``.
        item_buyability: Purchase-logit term of the item, ``[I]``.
        item_price: Price, ``[I]``.
        item_price_bucket: Logged price bucket ``1..price_buckets``, ``[I]``.
        related_items: Items of other categories each category's F retrieval may return, ``[C, L]``.
        user_vec: Taste vector of each user, ``[U, d]``.
        user_interest: Interest of each user in each category, ``[U, C]``.
        user_exit: Exit propensity (logit shift), ``[U]``.
        user_buy: Purchase propensity (logit shift), ``[U]``.
        user_swipe: Swipe-into-F propensity (logit shift), ``[U]``.
        user_price_sensitivity: Purchase-logit loss per unit of log price above the category median, ``[U]``.
        user_segment: Logged segment: the user's (noisily observed) favourite category ``1..C``, ``[U]``.
        user_activity_bucket: Logged activity level ``1..5`` (low exit propensity is high activity), ``[U]``.
        user_purchase_bucket: Logged purchase level ``1..5``, ``[U]``.
        user_price_bucket: Logged price tolerance ``1..5`` (low sensitivity is high tolerance), ``[U]``.
    """

    config: WorldConfig
    behaviour: BehaviourConfig
    seed: int
    category_names: tuple[str, ...]
    involvement: Tensor
    category_swipe: Tensor
    category_buy_offset: Tensor
    category_ctr_offset: Tensor
    category_price: Tensor
    category_offsets: Tensor
    item_category: Tensor
    item_brand: Tensor
    item_vec: Tensor
    item_quality: Tensor
    item_appeal: Tensor
    item_richness: Tensor
    item_buyability: Tensor
    item_price: Tensor
    item_price_bucket: Tensor
    related_items: Tensor
    user_vec: Tensor
    user_interest: Tensor
    user_exit: Tensor
    user_buy: Tensor
    user_swipe: Tensor
    user_price_sensitivity: Tensor
    user_segment: Tensor
    user_activity_bucket: Tensor
    user_purchase_bucket: Tensor
    user_price_bucket: Tensor

    @classmethod
    def build(cls, config: WorldConfig | None = None, behaviour: BehaviourConfig | None = None, seed: int = 0) -> World:
        """Draw a population.

        Args:
            config: Sizes and spreads; the defaults when None.
            behaviour: Response coefficients; the calibrated defaults when None.
            seed: Seed of every draw (same seed and config, same world).

        Returns:
            The world.
        """
        config = config or WorldConfig()
        behaviour = behaviour or BehaviourConfig()
        g = torch.Generator().manual_seed(seed)
        cats = config.categories
        n_cat, n_items, n_users, dim = len(cats), config.items, config.users, config.dim

        def randn(*shape: int) -> Tensor:
            return torch.randn(*shape, generator=g)

        # Category sizes proportional to weight, each at least one item.
        weights = torch.tensor([c.weight for c in cats], dtype=torch.float64)
        sizes = torch.clamp((weights / weights.sum() * n_items).floor().to(torch.int64), min=1)
        sizes[int(torch.argmax(weights))] += n_items - int(sizes.sum())
        if int(sizes.min()) < 1:
            raise ValueError(f"WorldConfig: items={n_items} is too few for {n_cat} categories")
        offsets = torch.zeros(n_cat + 1, dtype=torch.int64)
        offsets[1:] = sizes.cumsum(0)
        item_category = torch.repeat_interleave(torch.arange(n_cat), sizes)

        # Brands belong to one category, in proportion to its size.
        brand_sizes = torch.clamp((sizes.double() / n_items * config.brands).floor().to(torch.int64), min=1)
        brand_sizes[int(torch.argmax(sizes))] += config.brands - int(brand_sizes.sum())
        if int(brand_sizes.min()) < 1:
            raise ValueError(f"WorldConfig: brands={config.brands} is too few for the category sizes")
        brand_offsets = torch.zeros(n_cat + 1, dtype=torch.int64)
        brand_offsets[1:] = brand_sizes.cumsum(0)
        n_brands = int(brand_offsets[-1])
        within = torch.rand(n_items, generator=g)
        item_brand = brand_offsets[item_category] + (within * brand_sizes[item_category]).long()
        brand_quality = randn(n_brands) * config.brand_quality_scale
        brand_price = randn(n_brands) * 0.3

        item_vec = randn(n_items, dim)
        item_quality = brand_quality[item_brand] + randn(n_items) * config.item_quality_scale
        item_appeal = randn(n_items) * config.appeal_scale
        z_buy, z_rich = randn(n_items), randn(n_items)
        rho = config.richness_buy_corr
        item_richness = rho * z_buy + math.sqrt(max(0.0, 1 - rho * rho)) * z_rich
        item_buyability = z_buy * config.buyability_scale
        category_price = torch.tensor([c.price for c in cats], dtype=torch.float32)
        log_price = torch.log(category_price)[item_category] + brand_price[item_brand]
        log_price = log_price + randn(n_items) * config.price_spread
        item_price = torch.exp(log_price)
        item_price_bucket = _buckets(log_price, config.price_buckets)

        # Related items: other categories, the trigger's group first (weighted), a fixed list per category.
        groups = [c.group or c.name for c in cats]
        pool = min(config.related_pool, n_items - int(sizes.max()))
        if pool < 1:
            raise ValueError("WorldConfig: no items outside the largest category for related retrieval")
        related = torch.empty(n_cat, pool, dtype=torch.int64)
        for c in range(n_cat):  # one draw per category at build time, not a hot path
            same_group = torch.tensor([groups[k] == groups[c] for k in range(n_cat)])[item_category]
            w = torch.where(same_group, config.related_group_weight, 1.0).to(torch.float64)
            w[item_category == c] = 0.0
            related[c] = torch.multinomial(w, pool, replacement=False, generator=g)

        user_vec = randn(n_users, dim)
        user_interest = randn(n_users, n_cat) * config.interest_scale
        user_exit = _stratified_normal(n_users, g) * config.user_exit_scale
        user_buy = _stratified_normal(n_users, g) * config.user_buy_scale
        user_swipe = _stratified_normal(n_users, g) * config.user_swipe_scale
        user_price_sensitivity = (
            config.price_sensitivity + _stratified_normal(n_users, g) * config.price_sensitivity_scale
        )
        noise = config.feature_noise
        user_segment = torch.argmax(user_interest + randn(n_users, n_cat) * noise * config.interest_scale, 1) + 1
        activity = _buckets(-user_exit + randn(n_users) * noise * config.user_exit_scale, USER_BUCKETS)
        purchase = _buckets(user_buy + randn(n_users) * noise * config.user_buy_scale, USER_BUCKETS)
        price_level = _buckets(
            -user_price_sensitivity + randn(n_users) * noise * config.price_sensitivity_scale, USER_BUCKETS
        )

        def f32(values: list[float]) -> Tensor:
            return torch.tensor(values, dtype=torch.float32)

        return cls(
            config=config,
            behaviour=behaviour,
            seed=seed,
            category_names=tuple(c.name for c in cats),
            involvement=f32([c.involvement for c in cats]),
            category_swipe=f32([c.swipe for c in cats]),
            category_buy_offset=f32([c.buy_offset for c in cats]),
            category_ctr_offset=f32([c.ctr_offset for c in cats]),
            category_price=category_price,
            category_offsets=offsets,
            item_category=item_category,
            item_brand=item_brand,
            item_vec=item_vec,
            item_quality=item_quality,
            item_appeal=item_appeal,
            item_richness=item_richness,
            item_buyability=item_buyability,
            item_price=item_price,
            item_price_bucket=item_price_bucket,
            related_items=related,
            user_vec=user_vec,
            user_interest=user_interest,
            user_exit=user_exit,
            user_buy=user_buy,
            user_swipe=user_swipe,
            user_price_sensitivity=user_price_sensitivity,
            user_segment=user_segment,
            user_activity_bucket=activity,
            user_purchase_bucket=purchase,
            user_price_bucket=price_level,
        )

    def with_behaviour(self, behaviour: BehaviourConfig) -> World:
        """Return the same population with other response coefficients."""
        return replace(self, behaviour=behaviour)

    @property
    def n_users(self) -> int:
        """Number of users."""
        return self.user_vec.shape[0]

    @property
    def n_items(self) -> int:
        """Number of items."""
        return self.item_vec.shape[0]

    @property
    def n_categories(self) -> int:
        """Number of categories."""
        return len(self.category_names)

    @property
    def n_brands(self) -> int:
        """Number of brands."""
        return int(self.item_brand.max()) + 1

    @property
    def category_sizes(self) -> Tensor:
        """Number of items of each category, ``[C]``."""
        return self.category_offsets[1:] - self.category_offsets[:-1]

    def affinity(self, users: Tensor, items: Tensor) -> Tensor:
        """Latent affinity of users for items (broadcast shapes).

        ``a = taste_scale * <u, i> / sqrt(d) + interest[u, category(i)] + quality(i)``.

        Args:
            users: User indices, broadcastable with ``items``.
            items: Item indices.

        Returns:
            Float tensor of the broadcast shape.
        """
        cfg = self.config
        dot = (self.user_vec[users] * self.item_vec[items]).sum(-1) / math.sqrt(cfg.dim)
        interest = self.user_interest[users, self.item_category[items]]
        return cfg.taste_scale * dot + interest + self.item_quality[items]

    def category_preference(self, users: Tensor, temperature: float = 0.7) -> Tensor:
        """Probability of each category in the user's browsing: ``share_c * exp(interest_uc / temperature)``.

        Args:
            users: User indices ``[N]``.
            temperature: Softness of the interests (lower is more focused).

        Returns:
            Probabilities ``[N, C]`` (rows sum to 1).
        """
        logits = torch.log(self.category_sizes.to(torch.float32))[None, :] + self.user_interest[users] / temperature
        return torch.softmax(logits, dim=1)

    def user_features(self, users: Tensor) -> dict[str, Tensor]:
        """Logged user columns (1-based ids and buckets) of user indices.

        Args:
            users: User indices of any shape.

        Returns:
            Column name -> ``int64`` tensor of the same shape.
        """
        return {
            "user_id": users + 1,
            "user_segment": self.user_segment[users],
            "user_activity_bucket": self.user_activity_bucket[users],
            "user_purchase_bucket": self.user_purchase_bucket[users],
            "user_price_bucket": self.user_price_bucket[users],
        }

    def item_features(self, items: Tensor, prefix: str = "item") -> dict[str, Tensor]:
        """Logged item columns (1-based id, category, brand, price bucket) of item indices.

        Args:
            items: Item indices of any shape.
            prefix: Column prefix: ``"item"`` for the shown item, ``"trigger"`` for the F session's trigger.

        Returns:
            Column name -> ``int64`` tensor of the same shape (``item_id`` or ``trigger_item_id``, then
            ``<prefix>_category``, ``<prefix>_brand``, ``<prefix>_price_bucket``).
        """
        return {
            "item_id" if prefix == "item" else f"{prefix}_item_id": items + 1,
            f"{prefix}_category": self.item_category[items] + 1,
            f"{prefix}_brand": self.item_brand[items] + 1,
            f"{prefix}_price_bucket": self.item_price_bucket[items],
        }

    def feature_sizes(self) -> dict[str, int]:
        """Embedding-table size (padding row 0 included) of every logged categorical column."""
        sizes = {
            "user_id": self.n_users + 1,
            "user_segment": self.n_categories + 1,
            "user_activity_bucket": USER_BUCKETS + 1,
            "user_purchase_bucket": USER_BUCKETS + 1,
            "user_price_bucket": USER_BUCKETS + 1,
        }
        for prefix in ("item", "trigger"):
            sizes["item_id" if prefix == "item" else f"{prefix}_item_id"] = self.n_items + 1
            sizes[f"{prefix}_category"] = self.n_categories + 1
            sizes[f"{prefix}_brand"] = self.n_brands + 1
            sizes[f"{prefix}_price_bucket"] = self.config.price_buckets + 1
        return sizes
