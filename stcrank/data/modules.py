"""Every data module stcrank ships, imported together so that configs can name them by class name."""

from stcrank.data.eshop.datamodule import EShopDataModule
from stcrank.data.eshop.explore_datamodule import EShopExploreDataModule
from stcrank.data.recflow.cascade_lists import LCRONDataModule
from stcrank.data.recflow.datamodule import RecFlowDataModule
from stcrank.data.recflow.ranking_data import RecFlowRankingDataModule
from stcrank.data.recflow.retrieval import RecFlowRetrievalDataModule

__all__ = [
    "EShopDataModule",
    "EShopExploreDataModule",
    "LCRONDataModule",
    "RecFlowDataModule",
    "RecFlowRankingDataModule",
    "RecFlowRetrievalDataModule",
]
