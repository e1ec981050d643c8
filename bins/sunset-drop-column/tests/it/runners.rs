//! The generated files applied by the runners themselves (installed by `cargo xtask runners`):
//! sqlx-cli, diesel_cli, dbmate, Alembic, Django's `migrate` and ActiveRecord 6.1 (Debian's),
//! each up, down, up, with
//! `pg_dump --schema-only` and the catalog equal before the up and after the down.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::formats::{files, round_trip};
use crate::support::{Db, text};

use sunset_test_support::runner;

/// Runs a runner's command; panics with its output (and what it was) when it fails.
fn succeed(what: &str, command: &mut Command) {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot start {command:?}: {e}"));
    assert!(output.status.success(), "{what} failed:\n{}", text(&output));
}

/// How many migrations `generate` wrote: the number of steps a one-step rollback must take.
fn generated(dir: &Path, suffix: &str) -> usize {
    files(dir)
        .iter()
        .filter(|p| p.to_str().unwrap().ends_with(suffix))
        .count()
}

/// The test's URL with TLS off unless it asks for it (dbmate's driver defaults to `require`).
fn with_sslmode(url: &str) -> String {
    if url.contains("sslmode=") {
        url.to_owned()
    } else if url.contains('?') {
        format!("{url}&sslmode=disable")
    } else {
        format!("{url}?sslmode=disable")
    }
}

/// A runner whose up applies every pending migration and whose down reverts only the latest:
/// `name up_verb` once going up, `name down_verb` once per migration (a file ending in `suffix`)
/// going down. `command(verb)` builds the runner's command line.
fn one_up_each_down(
    dir: &Path,
    up: bool,
    suffix: &str,
    (name, up_verb, down_verb): (&str, &str, &str),
    command: impl Fn(&str) -> Command,
) {
    let (verb, times) = if up {
        (up_verb, 1)
    } else {
        (down_verb, generated(dir, suffix))
    };
    for _ in 0..times {
        succeed(&format!("{name} {verb}"), &mut command(verb));
    }
}

fn sqlx(db: &Db, dir: &Path, up: bool) {
    let verbs = ("sqlx migrate", "run", "revert");
    one_up_each_down(dir, up, ".up.sql", verbs, |verb| {
        let mut command = Command::new(runner("SUNSET_SQLX"));
        command
            .args(["migrate", verb, "--source"])
            .arg(dir)
            .arg("--database-url")
            .arg(&db.url);
        command
    });
}

#[test]
fn sqlx_runs_run_revert_run() {
    round_trip("sqlx", false, &|root| root.join("migrations"), &sqlx);
}

#[test]
fn sqlx_restores_data() {
    round_trip("sqlx", true, &|root| root.join("migrations"), &sqlx);
}

fn diesel(db: &Db, dir: &Path, up: bool) {
    let verbs = ("diesel migration", "run", "revert");
    one_up_each_down(dir, up, "/up.sql", verbs, |verb| {
        let mut command = Command::new(runner("SUNSET_DIESEL"));
        command
            .args(["migration", verb, "--migration-dir"])
            .arg(dir)
            .arg("--database-url")
            .arg(&db.url)
            .current_dir(dir.parent().unwrap());
        command
    });
}

#[test]
fn diesel_runs_run_revert_run() {
    round_trip("diesel", true, &|root| root.join("migrations"), &diesel);
}

fn dbmate(db: &Db, dir: &Path, up: bool) {
    one_up_each_down(dir, up, ".sql", ("dbmate", "up", "rollback"), |verb| {
        let mut command = Command::new(runner("SUNSET_DBMATE"));
        command
            .arg("--url")
            .arg(with_sslmode(&db.url))
            .arg("--migrations-dir")
            .arg(dir)
            .args(["--no-dump-schema", verb]);
        command
    });
}

#[test]
fn dbmate_runs_up_down_up() {
    round_trip("dbmate", false, &|root| root.join("db/migrations"), &dbmate);
}

#[test]
fn dbmate_restores_data() {
    round_trip("dbmate", true, &|root| root.join("db/migrations"), &dbmate);
}

/// A project's first Alembic revision, which the generated one revises.
const ALEMBIC_INITIAL: &str = "revision = \"1a2b\"\ndown_revision = None\nbranch_labels = None\ndepends_on = None\n\n\ndef upgrade():\n    pass\n\n\ndef downgrade():\n    pass\n";

/// What `alembic init` would leave, reduced to what `upgrade`/`downgrade` read.
const ALEMBIC_ENV: &str = "import os

from alembic import context
from sqlalchemy import create_engine, pool

url = os.environ[\"SUNSET_TEST_URL\"].replace(\"postgres://\", \"postgresql+psycopg2://\", 1)
engine = create_engine(url, poolclass=pool.NullPool)
with engine.connect() as connection:
    context.configure(connection=connection, transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()
";

fn alembic_layout(root: &Path) -> PathBuf {
    std::fs::create_dir_all(root.join("alembic/versions")).unwrap();
    std::fs::write(
        root.join("alembic.ini"),
        "[alembic]\nscript_location = alembic\n",
    )
    .unwrap();
    std::fs::write(root.join("alembic/env.py"), ALEMBIC_ENV).unwrap();
    std::fs::write(
        root.join("alembic/versions/1a2b_create_accounts.py"),
        ALEMBIC_INITIAL,
    )
    .unwrap();
    root.join("alembic/versions")
}

fn alembic(db: &Db, dir: &Path, up: bool) {
    let root = dir.parent().and_then(Path::parent).unwrap();
    let python = runner("SUNSET_RUNNERS_PYTHON");
    succeed(
        &format!(
            "alembic {}",
            if up { "upgrade head" } else { "downgrade -1" }
        ),
        Command::new(python)
            .args(["-m", "alembic"])
            .args(if up {
                ["upgrade", "head"]
            } else {
                ["downgrade", "-1"]
            })
            .current_dir(root)
            .env("SUNSET_TEST_URL", &db.url),
    );
}

#[test]
fn alembic_runs_upgrade_downgrade_upgrade() {
    round_trip("alembic", true, &alembic_layout, &alembic);
}

/// The smallest Django project: one app, the database from the test's URL.
const DJANGO_SETTINGS: &str = "import os
from urllib.parse import unquote, urlsplit

url = urlsplit(os.environ[\"SUNSET_TEST_URL\"])
SECRET_KEY = \"test\"
USE_TZ = True
INSTALLED_APPS = [\"billing\"]
DATABASES = {
    \"default\": {
        \"ENGINE\": \"django.db.backends.postgresql\",
        \"NAME\": url.path.lstrip(\"/\"),
        \"USER\": unquote(url.username or \"\"),
        \"PASSWORD\": unquote(url.password or \"\"),
        \"HOST\": url.hostname or \"\",
        \"PORT\": str(url.port or \"\"),
    }
}
";

const DJANGO_INITIAL: &str = "from django.db import migrations


class Migration(migrations.Migration):
    initial = True
    dependencies = []
    operations = []
";

fn django_layout(root: &Path) -> PathBuf {
    let migrations = root.join("billing/migrations");
    std::fs::create_dir_all(&migrations).unwrap();
    std::fs::write(root.join("settings.py"), DJANGO_SETTINGS).unwrap();
    std::fs::write(root.join("billing/__init__.py"), "").unwrap();
    std::fs::write(migrations.join("__init__.py"), "").unwrap();
    std::fs::write(migrations.join("0001_initial.py"), DJANGO_INITIAL).unwrap();
    migrations
}

fn django(db: &Db, dir: &Path, up: bool) {
    let root = dir.parent().and_then(Path::parent).unwrap();
    let mut command = Command::new(runner("SUNSET_RUNNERS_PYTHON"));
    command
        .args(["-m", "django", "migrate", "--no-input", "billing"])
        .current_dir(root)
        .env("PYTHONPATH", root)
        .env("DJANGO_SETTINGS_MODULE", "settings")
        .env("SUNSET_TEST_URL", &db.url);
    if !up {
        command.arg("0001_initial");
    }
    succeed(
        &format!("manage.py migrate{}", if up { "" } else { " back" }),
        &mut command,
    );
}

#[test]
fn django_runs_migrate_back_and_forth() {
    round_trip("django", true, &django_layout, &django);
}

/// The repository locks ActiveRecord 6.1, as Debian's `ruby-activerecord` is: the generated
/// files must say `Migration[6.1]` or that runner refuses them.
const GEMFILE_LOCK: &str = "GEM\n  remote: https://rubygems.org/\n  specs:\n    activerecord (6.1.7.10)\n      activemodel (= 6.1.7.10)\n      activesupport (= 6.1.7.10)\n    pg (1.4.5)\n\nPLATFORMS\n  ruby\n\nDEPENDENCIES\n  activerecord (~> 6.1)\n  pg\n";

/// `bin/rails db:migrate` and `db:rollback STEP=n`, without the rest of Rails.
const ACTIVERECORD_MIGRATE: &str = "require \"active_record\"
ActiveRecord::Base.establish_connection(ENV.fetch(\"SUNSET_TEST_URL\"))
context = ActiveRecord::MigrationContext.new(ARGV[0], ActiveRecord::SchemaMigration)
if ARGV[1] == \"up\"
  context.migrate
else
  context.rollback(Integer(ARGV[2]))
end
";

fn rails_layout(root: &Path) -> PathBuf {
    std::fs::write(root.join("Gemfile.lock"), GEMFILE_LOCK).unwrap();
    root.join("db/migrate")
}

fn rails(db: &Db, dir: &Path, up: bool) {
    let steps = generated(dir, ".rb").to_string();
    succeed(
        &format!("ActiveRecord {}", if up { "migrate" } else { "rollback" }),
        Command::new(runner("SUNSET_RUBY"))
            .args(["-e", ACTIVERECORD_MIGRATE])
            .arg(dir)
            .args([if up { "up" } else { "down" }, &steps])
            .env("SUNSET_TEST_URL", &db.url),
    );
}

#[test]
fn rails_runs_migrate_rollback_migrate() {
    round_trip("rails", true, &rails_layout, &rails);
}
