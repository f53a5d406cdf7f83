//! The images a test published, found and deleted by a property it gave them.

/// Deletes every image whose property `key` is `value`, saying on stderr which it could not
/// delete; does nothing when the images cannot be listed (the cleanup is best effort).
pub async fn delete_tagged(lxd: &lxd::Client, key: &str, value: &str) {
    let Ok(images) = lxd.list_images().await else {
        return;
    };
    for image in images
        .iter()
        .filter(|i| i.properties.get(key).map(String::as_str) == Some(value))
    {
        if let Err(e) = lxd.delete_image_if_exists(&image.fingerprint).await {
            eprintln!("cleanup: image {}: {e}", image.fingerprint);
        }
    }
}
