"""Transformer learngenes (``paradigm = "vit"``): the ancestry, TLEG and Heur-LG learngenes, descendants of any depth.

One module per stage, each in the stage of the package's data flow it belongs to (``tests/test_structure.py``):
``train`` (the recipe every ViT trains with), ``auxiliary`` (TLEG's distilled auxiliary net), ``ancestry``,
``linearity``, ``gene`` (:class:`~learngene.vit.gene.TransformerGene`), ``descendants``, ``criterion`` (which
ancestry blocks Heur-LG inherits), ``inherit``, ``methods`` (the compared methods as registry rows), ``report``
and ``run`` (:func:`~learngene.vit.run.run_vit`).  Nothing is imported here: ``import learngene.vit.gene`` stays
as light as that module.
"""
