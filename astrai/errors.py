"""Every named exception the engine raises, in one place."""


class AstraiError(Exception):
    """Base of all errors raised by this package."""


class CacheError(AstraiError):
    """Misuse of the paged cache. The cache is unchanged when one is raised."""


class PageOutOfRange(CacheError, IndexError):
    """A page id that is negative or not below n_pages."""


class PageNotAllocated(CacheError):
    """An operation that needs a referenced page got a free one."""


class DoubleFree(PageNotAllocated):
    """free() of a page that holds no reference."""


class BadPageTable(CacheError, ValueError):
    """A page table of the wrong shape, dtype or device (its ids: PageOutOfRange and
    PageNotAllocated)."""


class BadTensor(CacheError, ValueError):
    """K, V, positions or lengths handed to the cache that are not tensors of its shape,
    dtype and device."""


class BadCount(CacheError, TypeError, ValueError):
    """A count (pages, tokens) that is not a non-negative int: a bool, a float, below 0."""


class LayerOutOfRange(CacheError, IndexError):
    """A layer id that is not an int in 0..n_layers-1 (-1 would silently name the last)."""


class StaleView(PageNotAllocated):
    """A CacheView used after a page was released since it was bound: its pages may belong
    to another owner now, so it neither reads nor writes; bind again."""


class CacheTooLarge(CacheError, ValueError):
    """A cache whose K/V would not fit in the device's memory, refused before allocating."""


class PrefixConflict(CacheError):
    """record_prefix() asked to record a page already holding other tokens."""


class IntegrityError(CacheError):
    """check() found the allocator's structures out of agreement."""


class SharedPage(CacheError, ValueError):
    """A copy aimed at a page other owners hold, a page a prefix hit would read, or its own
    source."""


class BadSnapshot(CacheError, ValueError):
    """restore() handed a snapshot of another cache, or one already restored or closed."""


class SchedulerError(AstraiError):
    """Misuse of the scheduler."""


class BadSetting(SchedulerError, ValueError):
    """A scheduler setting of the wrong type or range (max_batch, temperature, ...)."""


class RequestTooLarge(SchedulerError, ValueError):
    """A request that could never fit in the page pool."""


class WorkloadError(AstraiError, ValueError):
    """A malformed workload file; the message names the field."""


class TraceFormatError(AstraiError, ValueError):
    """A malformed trace file or an unknown trace version."""


class TraceStoreBusy(AstraiError):
    """A kept recording another process has held locked for longer than a recording takes
    (a stopped or hung process): the message names its pid."""


class CheckpointError(AstraiError, ValueError):
    """A checkpoint directory that cannot be loaded; the message names the file or tensor."""


class UnsupportedCheckpoint(CheckpointError):
    """A checkpoint whose architecture or config this model does not implement."""


class CheckpointTensorError(CheckpointError):
    """A tensor missing, extra, of the wrong shape or of a non-float dtype."""


class CheckpointTooLarge(CheckpointError):
    """A checkpoint whose weights would not fit in the memory of the device asked for."""


class UnknownModel(CheckpointError):
    """A checkpoint name that is neither a known model (astrai.models.MODELS) nor a folder."""


class ModelNotInstalled(CheckpointError):
    """A named model whose package or converted folder is missing (`make setup` installs it)."""


class ModelDamaged(CheckpointError):
    """A named model's converted folder that does not match its stamp (`make setup` rebuilds
    it)."""


class ContextTooLong(WorkloadError):
    """A request whose prompt plus new tokens exceed the model's context length."""


class TokenizerError(AstraiError, ValueError):
    """Text that cannot be turned into token ids, or a tokenizer file that cannot be read."""


class OutputError(AstraiError, OSError):
    """An output file that cannot be written (a directory, a missing folder, a full device)."""
