"""distjob: a data-parallel text classifier on frozen GloVe vectors (MXNet Gluon + Horovod)."""
