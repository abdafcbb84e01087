//! A throwaway PostgreSQL database per test, on the server named by
//! `WEFT_TEST_POSTGRES_URL` (`scripts/test.sh` makes sure one answers).

use tokio_postgres::NoTls;

/// The server the tests use.
pub fn server_url() -> String {
    std::env::var("WEFT_TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A database created for one test and dropped after it.
pub struct TestDb {
    pub url: String,
    name: String,
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

async fn admin() -> tokio_postgres::Client {
    let url = server_url();
    let (client, conn) = tokio_postgres::connect(&url, NoTls)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "PostgreSQL does not answer at {url} ({e}); `bash scripts/test.sh` starts one, \
                 or set WEFT_TEST_POSTGRES_URL"
            )
        });
    tokio::spawn(conn);
    client
}

impl TestDb {
    pub fn new() -> TestDb {
        let name = format!("weft_e2e_{:016x}", rand_u64());
        block_on(async {
            admin()
                .await
                .batch_execute(&format!("CREATE DATABASE {name}"))
                .await
                .unwrap();
        });
        let base = server_url();
        let base = base.split('?').next().unwrap();
        let at = base.rfind('/').expect("a database URL ends in /DBNAME");
        TestDb {
            url: format!("{}/{name}", &base[..at]),
            name,
        }
    }

    /// Runs SQL statements (a script) on the test's database.
    pub fn execute(&self, sql: &str) {
        block_on(async {
            let (client, conn) = tokio_postgres::connect(&self.url, NoTls).await.unwrap();
            tokio::spawn(conn);
            client.batch_execute(sql).await.unwrap();
        })
    }

    /// Runs a query on the test's database and returns the first column of
    /// each row as text.
    pub fn query(&self, sql: &str) -> Vec<String> {
        block_on(async {
            let (client, conn) = tokio_postgres::connect(&self.url, NoTls).await.unwrap();
            tokio::spawn(conn);
            client
                .simple_query(sql)
                .await
                .unwrap()
                .into_iter()
                .filter_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(r) => {
                        Some(r.get(0).unwrap_or("").to_owned())
                    }
                    _ => None,
                })
                .collect()
        })
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        block_on(async move {
            let _ = admin()
                .await
                .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await;
        });
    }
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    h.write_u32(std::process::id());
    h.finish()
}
