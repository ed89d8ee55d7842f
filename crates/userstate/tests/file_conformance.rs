//! The file store passes the same conformance suite as every other backend, each check on a
//! fresh directory that is removed when the check ends.

userstate::store_conformance_tests!(|| async {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = userstate::FileStore::open(dir.path()).expect("open file store");
    (store, dir)
});
