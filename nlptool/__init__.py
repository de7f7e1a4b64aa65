"""nlptool: a command-line NLP toolbox built on techniques from Su Jianlin's 2021-22 research posts."""

__version__ = "0.1.0"
