"""Tasks: LightningModules that train and evaluate stcrank models."""

from stcrank.tasks.base import BaseTask
from stcrank.tasks.cascade import TwoStageCascadeTask
from stcrank.tasks.esmm import ESMMTask
from stcrank.tasks.multitask import MultiTaskRankingTask
from stcrank.tasks.ranking import RankingTask
from stcrank.tasks.retrieval import RetrievalTask

__all__ = ["BaseTask", "ESMMTask", "MultiTaskRankingTask", "RankingTask", "RetrievalTask", "TwoStageCascadeTask"]
