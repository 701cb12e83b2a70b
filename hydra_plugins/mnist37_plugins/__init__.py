"""mnist37's own Hydra plugins (Hydra only loads plugins from the `hydra_plugins` namespace):

  optuna_sweeper.OptunaSweeper   `hparams_search=optuna`: Optuna >= 4 through ask/tell, with studies
                                 shared through a journal file or a database
  slurm_launcher.SlurmLauncher   `hydra/launcher=slurm`: hydra-submitit-launcher's, except that a job
                                 that ends without a result never ends or hangs the sweep
"""
