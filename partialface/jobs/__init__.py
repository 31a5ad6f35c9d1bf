"""The commands of the ``partialface`` CLI, one module each: ``configure(parser)`` adds the options,
``run(args) -> int`` runs it and prints. The work lives in the layers below (``align`` ->
``detect.dataset``, ``train`` -> ``training``, ``benchmark`` -> ``evaluation``); the jobs that are workflows
of their own (``demo``, ``export-partial``, ``split``, ``synth``, ``weights``) keep a plain Python function
beside their options.
"""
