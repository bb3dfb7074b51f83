import NIOCore
import NIOPosix

// Swift tasks run on the event loops that do the daemon's I/O, so an await between reading a
// request and writing its answer is no hop to another thread pool. Before any task exists.
NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor()
await Nspawnd.start()
