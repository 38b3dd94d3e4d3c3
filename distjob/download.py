"""AG News from the web: the files torchtext's AG_NEWS downloads, MD5-checked, written
atomically into the cache dir, and the class names its archive ships."""
import hashlib
import os
import urllib.request

from .config import UserError
from .generated import write_class_names
from .readers import CLASSES_FILE
from .store import atomic_file

AGNEWS_CLASSES = ("World", "Sports", "Business", "Sci/Tech")  # AG News's classes.txt: labels 1..4

# The files torchtext's AG_NEWS downloads, with its MD5s.
AGNEWS_URLS = {
    "train.csv": ("https://raw.githubusercontent.com/mhjabreel/CharCnn_Keras/master/data/ag_news_csv/train.csv",
                  "b1a00f826fdfbd249f79597b59e1dc12"),
    "test.csv": ("https://raw.githubusercontent.com/mhjabreel/CharCnn_Keras/master/data/ag_news_csv/test.csv",
                 "d52ea96a97a2d943681189a97654912d"),
}


def download_agnews(cache_dir, timeout=30):
    """Fetch train.csv and test.csv into cache_dir (MD5-checked, atomic), if not there yet,
    and write AG News's classes.txt beside them (its archive ships one; the names are fixed)."""
    for name, (url, md5) in AGNEWS_URLS.items():
        path = os.path.join(cache_dir, name)
        if os.path.exists(path):
            continue
        try:
            os.makedirs(cache_dir, exist_ok=True)
            with atomic_file(path) as out, urllib.request.urlopen(url, timeout=timeout) as response:
                digest = hashlib.md5()
                for chunk in iter(lambda: response.read(1 << 20), b""):
                    out.write(chunk)
                    digest.update(chunk)
                if digest.hexdigest() != md5:  # raised inside: the file is never named path
                    raise UserError(f"{url}: downloaded file has the wrong MD5 (expected {md5})")
        except OSError as e:  # URLError, timeouts, DNS failures: no network
            raise UserError(f"AG News is not in {cache_dir} and could not be downloaded ({e}). "
                            "Pass --data-dir DIR with train.csv and test.csv (torchtext's "
                            "AG_NEWS layout) to train offline.") from None
    if not os.path.exists(os.path.join(cache_dir, CLASSES_FILE)):
        write_class_names(os.path.join(cache_dir, CLASSES_FILE), AGNEWS_CLASSES)
