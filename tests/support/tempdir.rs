//! A scratch directory removed when dropped, named for the test crate, the test and the
//! process. Included with `#[path]` by the root's, the admin server's and the CLI's tests.

/// A directory under the system's temporary directory, removed when dropped.
pub(crate) struct Dir(pub(crate) std::path::PathBuf);

impl Dir {
    /// A fresh, empty directory for test `name`.
    pub(crate) fn new(name: &str) -> Dir {
        let crate_name = env!("CARGO_PKG_NAME");
        let path =
            std::env::temp_dir().join(format!("{crate_name}-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("temp dir");
        Dir(path)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
