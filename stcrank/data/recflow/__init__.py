"""RecFlow: the official release layout, its importer, stcrank's columnar store and the data module.

* :func:`stcrank.data.recflow.synth.synth_recflow` generates a release with a known ground truth;
* :func:`stcrank.data.recflow.importer.import_recflow` converts a release into the store;
* :class:`stcrank.data.recflow.store.RecFlowStore` reads the store;
* :class:`stcrank.data.recflow.datamodule.RecFlowDataModule` serves batches (contract in
  :mod:`stcrank.data.recflow.collate`).

Submodules are imported on use, so that ``stcrank data`` commands start fast.
"""
