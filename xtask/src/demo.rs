pub(crate) fn run() -> anyhow::Result<()> {
    crate::services::up().map(drop)
}
