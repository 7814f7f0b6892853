"""Ground truth of the synthetic RecFlow data: users, items and how much a user likes an item.

The model (all draws from ``numpy.random.default_rng([seed, 0])``, so the world depends only on the number of
users, the number of items and the seed):

* **Categories.** 16 first-level categories with latent vectors ``C1 ~ N(0, I)``; 128 second-level categories,
  each under a random first-level one, with ``C2 = C1[parent] + N(0, 0.7² I)``.
* **Authors.** ``items // 8`` authors (at least 10), each with a latent ``A ~ N(0, 0.6² I)`` and a main
  second-level category; an item's category is its author's main one with probability 0.7, else uniform.
* **Items.** ``V = C2[category_level_two] + A[author] + N(0, 0.5² I)`` (dimension 8), a quality bias
  ``b = T[upload_type] + N(0, 0.3²)``, a popularity ``exp(0.8 b + N(0, 0.8²))`` (retrieval draws by it),
  a duration (log-normal around 25 s) and an upload time (up to 60 days before the first day).
* **Users.** ``U = G[gender] + Age[age] + P[province] + N(0, I)`` with ``G, P ~ N(0, 0.4² I)`` and
  ``Age ~ N(0, 0.6² I)``, so the categorical user features carry signal, plus a watch propensity
  ``beta ~ N(0, 0.4²)``.
* **Affinity.** ``a(u, i) = <U_u, V_i> / sqrt(8 * var U * var V) + b_i`` (standard deviation about 1).
* **Watching.** The watched fraction of an exposure is ``r = exp(-3.2 + 0.9 a + beta_u + 0.6 L)`` with ``L``
  standard logistic, capped at 3; ``playing_time = round(r * duration)``; ``effective_view`` is
  ``playing_time >= 30 %`` of the duration, ``long_view`` ``>= 100 %``. Given an effective view, like, follow,
  forward and comment are Bernoulli with probability ``sigmoid(c + k a)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DIM = 8
N_GENDER, N_AGE, N_PROVINCE = 3, 8, 34
N_CATEGORY_ONE, N_CATEGORY_TWO, N_UPLOAD_TYPE = 16, 128, 6
CATEGORY_ONE_PADDING = 2
"""The padding value of the unshifted category_level_one in the reference code, which no real item takes.

The reference embeds it with padding index 2 and pads stage rows with 2, so the generated first-level categories
are 0, 1, 3, ..., 16."""
WATCH_INTERCEPT, WATCH_SLOPE, WATCH_SCALE, MAX_WATCH_RATIO = -3.2, 0.9, 0.6, 3.0
EFFECTIVE_VIEW_RATIO = 0.3
INTERACTIONS: dict[str, tuple[float, float]] = {
    "like": (-2.5, 0.8),
    "follow": (-5.0, 1.0),
    "forward": (-5.5, 1.0),
    "comment": (-4.0, 0.8),
}
"""Feedback given an effective view: name -> (intercept, slope on the affinity) of its logit."""

_VAR_U = 0.4**2 + 0.6**2 + 0.4**2 + 1.0
_VAR_V = 1.0 + 0.7**2 + 0.6**2 + 0.5**2
_SCALE = 1.0 / np.sqrt(DIM * _VAR_U * _VAR_V)
_MAX_RETRIEVAL_ROUNDS = 200


def _alias_table(probability: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Walker's alias table (Vose's construction): O(1) weighted draws, unlike a CDF search per draw."""
    n = len(probability)
    scaled = (probability * n).tolist()
    keep = [1.0] * n
    alias = list(range(n))
    small = [i for i, p in enumerate(scaled) if p < 1.0]
    large = [i for i, p in enumerate(scaled) if p >= 1.0]
    while small and large:
        s, g = small.pop(), large.pop()
        keep[s], alias[s] = scaled[s], g
        scaled[g] += scaled[s] - 1.0
        (small if scaled[g] < 1.0 else large).append(g)
    return np.asarray(keep), np.asarray(alias, dtype=np.int64)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def category_one_ids(index: np.ndarray) -> np.ndarray:
    """The release's category_level_one id of each category index: indices from 2 on move up by one, skipping 2."""
    return np.where(index >= CATEGORY_ONE_PADDING, index + 1, index)


@dataclass
class SyntheticWorld:
    """Users, items and their true affinities (see the module docstring for the model).

    Build it with :meth:`create`; the same ``(users, items, seed)`` always gives the same world.
    """

    user_device: np.ndarray
    user_gender: np.ndarray
    user_age: np.ndarray
    user_province: np.ndarray
    user_latent: np.ndarray
    user_watch_bias: np.ndarray
    n_devices: int
    item_author: np.ndarray
    item_category_two: np.ndarray
    item_category_one: np.ndarray
    item_upload_type: np.ndarray
    item_upload_age_s: np.ndarray
    item_duration_ms: np.ndarray
    item_latent: np.ndarray
    item_bias: np.ndarray
    item_alias_probability: np.ndarray
    item_alias: np.ndarray
    n_authors: int

    @classmethod
    def create(cls, users: int, items: int, seed: int) -> SyntheticWorld:
        """Draw a world.

        Args:
            users: Number of users.
            items: Number of items (videos).
            seed: Random seed.
        """
        rng = np.random.default_rng([seed, 0])
        n_authors = max(10, items // 8)
        cate_one_latent = rng.normal(size=(N_CATEGORY_ONE, DIM))
        cate_parent = rng.integers(0, N_CATEGORY_ONE, N_CATEGORY_TWO)
        cate_two_latent = cate_one_latent[cate_parent] + 0.7 * rng.normal(size=(N_CATEGORY_TWO, DIM))
        author_latent = 0.6 * rng.normal(size=(n_authors, DIM))
        author_category = rng.integers(0, N_CATEGORY_TWO, n_authors)
        author_weight = 1.0 / np.arange(1, n_authors + 1) ** 0.7
        item_author = rng.choice(n_authors, size=items, p=author_weight / author_weight.sum())
        item_category_two = np.where(
            rng.random(items) < 0.7, author_category[item_author], rng.integers(0, N_CATEGORY_TWO, items)
        )
        upload_type_effect = 0.3 * rng.normal(size=N_UPLOAD_TYPE)
        item_upload_type = rng.choice(N_UPLOAD_TYPE, size=items, p=[0.5, 0.2, 0.12, 0.08, 0.06, 0.04])
        item_latent = (
            cate_two_latent[item_category_two] + author_latent[item_author] + 0.5 * rng.normal(size=(items, DIM))
        )
        item_bias = upload_type_effect[item_upload_type] + 0.3 * rng.normal(size=items)
        popularity = np.exp(0.8 * item_bias + 0.8 * rng.normal(size=items))
        item_duration_ms = np.clip(np.exp(rng.normal(np.log(25_000.0), 0.6, items)), 3_000, 600_000).astype(np.int64)
        item_upload_age_s = rng.integers(3_600, 60 * 86_400, items)

        n_devices = users + users // 10 + 1
        gender_latent = 0.4 * rng.normal(size=(N_GENDER, DIM))
        age_latent = 0.6 * rng.normal(size=(N_AGE, DIM))
        province_latent = 0.4 * rng.normal(size=(N_PROVINCE, DIM))
        user_gender = rng.integers(0, N_GENDER, users)
        user_age = rng.integers(0, N_AGE, users)
        user_province = rng.integers(0, N_PROVINCE, users)
        user_latent = (
            gender_latent[user_gender]
            + age_latent[user_age]
            + province_latent[user_province]
            + rng.normal(size=(users, DIM))
        )
        alias_probability, alias = _alias_table(popularity / popularity.sum())
        return cls(
            user_device=rng.integers(0, n_devices, users),
            user_gender=user_gender,
            user_age=user_age,
            user_province=user_province,
            user_latent=user_latent.astype(np.float32),
            user_watch_bias=0.4 * rng.normal(size=users),
            n_devices=n_devices,
            item_author=item_author,
            item_category_two=item_category_two,
            item_category_one=category_one_ids(cate_parent[item_category_two]),
            item_upload_type=item_upload_type,
            item_upload_age_s=item_upload_age_s,
            item_duration_ms=item_duration_ms,
            item_latent=item_latent.astype(np.float32),
            item_bias=item_bias.astype(np.float32),
            item_alias_probability=alias_probability,
            item_alias=alias,
            n_authors=n_authors,
        )

    @property
    def n_users(self) -> int:
        """Number of users."""
        return len(self.user_latent)

    @property
    def n_items(self) -> int:
        """Number of items."""
        return len(self.item_latent)

    def affinity(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """True affinity of users for items (broadcasting ``users`` against ``items``).

        Args:
            users: User ids, e.g. shape ``[n, 1]``.
            items: Item ids, e.g. shape ``[n, k]``.

        Returns:
            float32 array of the broadcast shape.
        """
        users, items = np.asarray(users), np.asarray(items)
        if users.ndim == 2 and items.ndim == 2 and users.shape[1] == 1:
            # One user per row: a batched mat-vec, without broadcasting the user vectors over the items.
            dot = np.einsum("nkd,nd->nk", self.item_latent[items], self.user_latent[users[:, 0]])
        else:
            users, items = np.broadcast_arrays(users, items)
            dot = np.einsum("...d,...d->...", self.user_latent[users], self.item_latent[items])
        return (dot * _SCALE + self.item_bias[items]).astype(np.float32)

    def watch_logit(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Location of the log watch ratio, ``-3.2 + 0.9 a + beta_u``."""
        return WATCH_INTERCEPT + WATCH_SLOPE * self.affinity(users, items) + self.user_watch_bias[users]

    def effective_view_probability(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Probability that an exposure of ``items`` to ``users`` would be an effective view."""
        return _sigmoid((self.watch_logit(users, items) - np.log(EFFECTIVE_VIEW_RATIO)) / WATCH_SCALE)

    def sample_retrieval(self, rng: np.random.Generator, n_requests: int, size: int) -> np.ndarray:
        """Draw ``size`` distinct items per request, by popularity.

        Args:
            rng: Random generator.
            n_requests: Number of requests.
            size: Items per request (at most half the corpus).

        Returns:
            int64 array ``[n_requests, size]``.
        """
        if size * 2 > self.n_items:
            raise ValueError(f"retrieval of {size} items needs a corpus of at least {2 * size} items")
        out = np.empty((n_requests, size), dtype=np.int64)
        todo = np.arange(n_requests)
        for _ in range(_MAX_RETRIEVAL_ROUNDS):
            if not len(todo):
                break
            shape = (len(todo), size + size // 2 + 8)
            draws = rng.integers(0, self.n_items, shape)
            draws = np.where(rng.random(shape) < self.item_alias_probability[draws], draws, self.item_alias[draws])
            order = np.argsort(draws, axis=1, kind="stable")
            ranked = np.take_along_axis(draws, order, axis=1)
            repeated = np.zeros_like(ranked, dtype=bool)
            repeated[:, 1:] = ranked[:, 1:] == ranked[:, :-1]
            duplicate = np.empty_like(repeated)
            np.put_along_axis(duplicate, order, repeated, axis=1)
            keep_key = np.where(duplicate, np.iinfo(np.int64).max, np.arange(draws.shape[1]))
            first = np.argsort(keep_key, axis=1, kind="stable")[:, :size]
            complete = (~duplicate).sum(axis=1) >= size
            out[todo[complete]] = np.take_along_axis(draws, first, axis=1)[complete]
            todo = todo[~complete]
        if len(todo):
            # Popularity too concentrated for this many distinct items: say so instead of drawing forever.
            raise ValueError(
                f"could not draw {size} distinct items by popularity out of {self.n_items} in "
                f"{_MAX_RETRIEVAL_ROUNDS} rounds; retrieve fewer items (retrieved x retrieval_pool) or use more items"
            )
        return out

    def sample_personalised_retrieval(
        self, rng: np.random.Generator, users: np.ndarray, size: int, pool: int, noise: float
    ) -> np.ndarray:
        """Draw ``size`` distinct items per request from ``pool * size`` popular ones, by noisy true affinity.

        A stand-in for a personalised retrieval channel: the request's user keeps the ``size`` items of highest
        ``affinity + N(0, noise^2)`` among ``pool * size`` distinct items drawn by popularity. ``pool = 1`` keeps
        every drawn item (no personalisation).

        Args:
            rng: Random generator.
            users: User of each request, ``[n_requests]``.
            size: Items per request.
            pool: Popular items drawn per retrieved item (at least 1).
            noise: Standard deviation of the retrieval scorer's noise.

        Returns:
            int64 array ``[n_requests, size]``.
        """
        if pool < 1:
            raise ValueError(f"the retrieval pool must be at least 1, got {pool}")
        drawn = self.sample_retrieval(rng, len(users), size * pool)
        if pool == 1:
            return drawn
        score = self.affinity(np.asarray(users)[:, None], drawn) + noise * rng.standard_normal(drawn.shape)
        best = np.argpartition(-score, size - 1, axis=1)[:, :size]
        return np.take_along_axis(drawn, best, axis=1)

    def sample_watch(self, rng: np.random.Generator, users: np.ndarray, items: np.ndarray) -> dict[str, np.ndarray]:
        """Draw the logged feedback of exposures.

        Args:
            rng: Random generator.
            users: User of each exposure, shape ``[n]``.
            items: Item of each exposure, shape ``[n]``.

        Returns:
            int64 arrays by feedback column name (``playing_time`` in ms, the rest 0/1).
        """
        noise = rng.logistic(size=len(users))
        ratio = np.minimum(np.exp(self.watch_logit(users, items) + WATCH_SCALE * noise), MAX_WATCH_RATIO)
        duration = self.item_duration_ms[items]
        playing_time = np.round(ratio * duration).astype(np.int64)
        effective = (10 * playing_time >= 3 * duration).astype(np.int64)
        out = {
            "playing_time": playing_time,
            "effective_view": effective,
            "long_view": (playing_time >= duration).astype(np.int64),
        }
        affinity = self.affinity(users, items)
        for name, (intercept, slope) in INTERACTIONS.items():
            out[name] = effective * (rng.random(len(users)) < _sigmoid(intercept + slope * affinity))
        return out
