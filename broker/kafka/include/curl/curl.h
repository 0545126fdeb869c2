/* An empty stand-in for libcurl's header, found through CPATH (.cargo/config.toml).
 *
 * librdkafka 2.12 (bundled by rdkafka-sys 4.10) includes <curl/curl.h> in rdkafka_conf.c
 * under `#ifdef WITH_OAUTHBEARER_OIDC`, which its generated config.h always defines (to 0
 * without curl: `#cmakedefine01`), and uses nothing from it unless that macro is 1
 * (rust-rdkafka #829). We build librdkafka without curl, so this header lets a fresh machine
 * build without libcurl's development package. */
