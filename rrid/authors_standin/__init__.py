"""Stand-ins for the two modules of the authors' released model, for tests and chapter 8.

The authors' ``pretrained_weights.pth`` is ``torch.save`` of a whole
``DataParallel(RelationModel(...))`` object, so the pickle names their modules
``Relation_final_ver_last_multi_scale_large_losses`` (``RelationModel``) and ``resnet``
(``ResNet``, ``Bottleneck``). The two files here define classes with those module, class and
attribute names, written for this project from the facts in issue 11 and
official-code-notes.md (not copied from the authors' repository). They are top-level modules:
``rrid.authors.standin_modules()`` puts this folder on ``sys.path`` while they are imported and
takes them out of ``sys.modules`` again, so that a file written from them can be imported the
way the authors' file is, without their code.
"""
