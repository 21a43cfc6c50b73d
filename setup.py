"""Install prompt_recycling.

Core (model, prompts, training, checkpoints, recycling) needs no TensorFlow:
    pip install -e .
Tasks, evaluation with SeqIO, and the test suite (CPU):
    pip install -c constraints-cpu.txt -e '.[tasks,test]'
The HF PEFT reference of the speed benchmarks (benchmarks/peft_baseline.py):
    pip install -c constraints-cpu.txt -e '.[test,bench]'
"""
import setuptools

CORE = [
    'absl-py>=2.0',
    'flax>=0.10,<0.13',
    'gin-config>=0.5',
    'jax>=0.5,<0.12',
    'matplotlib>=3.8',
    'msgpack>=1.0',
    'numpy>=1.26',
    'optax>=0.2.4',
    'orbax-checkpoint>=0.11',
    'safetensors>=0.4',
    'sentencepiece>=0.2',
    'tensorstore>=0.1.70',
    'tqdm>=4.66',
]
TASKS = [
    'clu>=0.0.12',
    'seqio>=0.0.19',
    'tensorflow>=2.16',
    'tensorflow-datasets>=4.9',
    'tensorflow-text>=2.16',
    'tensorboard>=2.16',  # clu's summary writer imports it.
]
TEST = [
    'pytest>=8',
    'pytest-xdist>=3.5',
    # HF reference for parity tests; 2.13.0 is the CPU build this machine kind ships.
    'torch>=2.1,<=2.13.0',
    'transformers>=4.40',
]
BENCH = [
    # benchmarks/peft_baseline.py: HF PEFT prompt tuning, the side-by-side reference (with TEST's
    # torch and transformers). 0.21.2 is the version its numbers in BENCHMARKS.md were taken with.
    'peft==0.21.2',
]

setuptools.setup(
    name='prompt_recycling',
    version='0.1.0',
    description='Soft prompt tuning on frozen T5 and prompt recycling between models, in JAX/Flax.',
    packages=setuptools.find_packages(include=['prompt_recycling', 'prompt_recycling.*', 'tasks', 'tasks.*']),
    package_data={'': ['*.gin'], 'prompt_recycling': ['assets/**/*']},
    python_requires='>=3.10',
    install_requires=CORE,
    extras_require={'tasks': TASKS, 'test': TEST, 'bench': BENCH, 'all': TASKS + TEST + BENCH},
)
